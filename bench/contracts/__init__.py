"""The contracts between edgebench's packages: typed data only, importing nothing else of the project.

Every package may import these modules, and they import no other edgebench module (an
import-linter contract in pyproject.toml checks both):

- :mod:`.identity`  - the six-part cell identity (model, recipe, backend, precision, batch, target)
- :mod:`.results`   - what a worker returns for one cell (latency, memory, accuracy, fidelity, ...)
- :mod:`.flags`     - warnings as codes with their text (``contended``, ``sparse-not-used``, ...)
- :mod:`.evidence`  - what a backend reports about what really ran (delegation, kernels, layers)
- :mod:`.registry`  - the one registry idiom every plugin family uses
- :mod:`.errors`    - user-facing errors: one line naming the file, the key and the fix
- :mod:`.version`   - this edgebench's version
"""
