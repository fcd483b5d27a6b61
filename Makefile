# edgebench developer entry points. Every target creates the venv first, so a fresh clone needs
# nothing but python3 (3.10+; the local CPU torch wheel here is for 3.11).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
EXTRAS ?= prune,onnxruntime,litert,litert-convert,report,regress,postgres,ssh,fleet,dev

.PHONY: install demo test test-fast bench constraints browser postgres sshd clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so nothing later resolves a CUDA build.
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@$(PIP) list 2>/dev/null | grep -iE "^nvidia-" && { echo "error: CUDA packages were pulled into $(VENV); check constraints.txt" >&2; exit 1; } || true
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgebench run

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not benchmark"

bench: $(STAMP)
	$(PY) -m pytest -q -m benchmark tests/benchmarks -s --benchmark-only --benchmark-columns=min,median,max,stddev,rounds

constraints: $(STAMP)
	$(PIP) freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' | { echo "# Pinned versions for the host venv that 'make' builds (Python 3.11, CPU)."; echo "# torch is the local CPU wheel: an unpinned torch pulls multi-GB CUDA wheels."; echo "# Regenerate with 'make constraints' after changing dependencies."; cat; } > constraints.txt

# Debian's Chromium for the HTML report test (playwright drives /usr/bin/chromium; it downloads no browser).
APT := apt-get -o DPkg::Lock::Timeout=600
browser:
	command -v chromium >/dev/null || { $(APT) update && $(APT) install -y chromium; }

# Debian's PostgreSQL server for the store tests: they initdb a throwaway cluster on a free loopback port
# (tests/conftest.py), so the cluster the package may start on 5432 is not used.
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(APT) update && $(APT) install -y postgresql; }

# Debian's OpenSSH server for the ssh-loopback target tests: they start their own sshd on a free loopback
# port with generated keys (tests/sshd_support.py); the package's own service is not used.
sshd:
	test -x /usr/sbin/sshd || { $(APT) update && $(APT) install -y openssh-server; }

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
