"""The HTML report's recommendation per target: the answer with default constraints as a card (the same
function as ``edgebench recommend``, :func:`edgebench.reports.recommend.recommend`), then the answers for
the other objectives."""

from __future__ import annotations

from edgebench.reports import recommend as rec_mod
from edgebench.reports.htmlkit import e, json_script, na, size_text
from edgebench.reports.stats import Bootstrapper
from edgebench.reports.tables import RunReport

# The section's constraints: the CLI's defaults, so `edgebench recommend RUN --target T` gives the same.
DEFAULT_CONSTRAINTS = rec_mod.Constraints()
OTHER_OBJECTIVES = ("throughput", "size", "energy")
VERDICT_BADGES = {"win": "WIN", "tie": "TIE", "sole": "only candidate"}


def recommendation_block(report: RunReport, target: str, boot: Bootstrapper) -> str:
    """The cards of one target (one per model), then the table of the other objectives."""
    out = [_card(report, target, rec) for rec in rec_mod.recommend(report, target, DEFAULT_CONSTRAINTS, bootstrapper=boot)]
    out.append(_other_objectives(report, target, boot))
    return "\n".join(out)


def _card(report: RunReport, target: str, rec: rec_mod.Recommendation) -> str:
    obj, best = rec.objective, rec.best
    attrs = (f'data-target="{e(rec.target)}" data-model="{e(rec.model)}" data-objective="{e(obj.name)}" '
             f'data-verdict="{e(rec.verdict)}" data-best="{e(best.row.cell_key if best else "")}" '
             f'data-tied="{e(" ".join(c.row.cell_key for c in rec.tied))}"')
    card = [f'<div class="recommendation verdict-{e(rec.verdict)}" {attrs}>',
            f'<p class="constraints">Model <b>{e(rec.model)}</b> · objective: <b>{e(obj.label)}</b> '
            f'({"lower" if obj.lower_is_better else "higher"} is better) · {e(rec.constraints.describe())}</p>',
            f'<p class="headline">{e(rec.headline())}</p>']
    if best is not None:
        card += _best(rec)
    if rec.notes:
        card.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in rec.notes) + "</ul>")
    if rec.candidates:
        card.append(_ranked(rec))
    if rec.excluded:
        card.append(f'<details><summary>{len(rec.excluded)} excluded, with why</summary><ul class="excluded">'
                    + "".join(f"<li><b>{e(rec_mod.label(x.row))}</b>: {e(x.reason)}</li>" for x in rec.excluded) + "</ul></details>")
    card.append(f'<p class="muted">Same answer in a terminal: <code>edgebench recommend {e(report.run.id)} --target {e(target)}</code> '
                "(add --max-accuracy-drop, --max-memory, --objective, --batch to change the question).</p>")
    card.append(json_script(rec.to_dict(), "recommendation-data"))
    card.append("</div>")
    return "\n".join(card)


def _best(rec: rec_mod.Recommendation) -> list[str]:
    """The best cell's numbers and the verdict with its margin."""
    obj, best = rec.objective, rec.best
    b = best.row
    margin = rec_mod.describe_margin(rec)
    return [f'<p class="best-detail">{"ranked first: " + e(rec_mod.label(b)) + " — " if rec.verdict == "tie" else ""}'
            f"{e(obj.label)} <b>{e(rec_mod.format_value(obj, best.value))}</b>; top-1 {na(b.top1, '.2%')} "
            f"({e(rec_mod.delta_text(best.drop_pts))} pts vs {e(best.reference)}); peak RSS {na(b.peak_rss_mib, '.0f', ' MiB')}; "
            f"size {size_text(b.size_bytes)}</p>",
            f'<p class="verdict"><span class="badge badge-{e(rec.verdict)}">{VERDICT_BADGES[rec.verdict]}</span> '
            + e(margin or ("every candidate ties" if rec.verdict == "tie" else "")) + "</p>"]


def _ranked(rec: rec_mod.Recommendation) -> str:
    """The candidates in rank order, each with its interval against the best."""
    obj = rec.objective
    return (f'<details open><summary>{len(rec.candidates)} candidate(s), ranked, with the interval against the best</summary>'
            '<table class="ranked"><thead><tr><th>#</th><th>candidate</th><th>' + e(obj.label) + '</th><th>top-1 (Δ pts)</th>'
            "<th>peak RSS</th><th>vs best</th></tr></thead><tbody>"
            + "".join(f'<tr class="{"tied" if k.tied else ""}"><td>{k.rank}</td><td>{e(rec_mod.label(k.row))}</td>'
                      f'<td class="num">{e(rec_mod.format_value(obj, k.value))}</td>'
                      f'<td class="num">{na(k.row.top1, ".2%")} ({e(rec_mod.delta_text(k.drop_pts))})</td>'
                      f'<td class="num">{na(k.row.peak_rss_mib, ".0f", " MiB")}</td><td>{e(rec_mod.comparison_text(k))}</td></tr>'
                      for k in rec.candidates)
            + "</tbody></table></details>")


def _other_objectives(report: RunReport, target: str, boot: Bootstrapper) -> str:
    """Throughput, size and energy under the same constraints otherwise: one row per objective and model."""
    rows_html = []
    for name in OTHER_OBJECTIVES:
        c = rec_mod.Constraints(DEFAULT_CONSTRAINTS.max_accuracy_drop_pts, DEFAULT_CONSTRAINTS.max_memory_mib, name)
        for rec in rec_mod.recommend(report, target, c, bootstrapper=boot):
            margin = rec_mod.describe_margin(rec) or ""
            if rec.best:
                detail = margin or ("every candidate ties" if rec.verdict == "tie" else "the only candidate")
            else:
                detail = "; ".join(rec.notes) or "no candidate meets the constraints"
            rows_html.append(f'<tr data-objective="{e(name)}" data-verdict="{e(rec.verdict)}" data-best="{e(rec.best.row.cell_key if rec.best else "")}">'
                             f"<td>{e(rec.objective.label)}</td><td>{e(rec.model)}</td><td>{e(rec.verdict)}</td><td>{e(rec.headline())}"
                             + (f" ({e(rec_mod.format_value(rec.objective, rec.best.value))})" if rec.best else "")
                             + f"</td><td>{e(detail)}</td></tr>")
    return ('<h3>Other objectives</h3><table class="objectives"><thead><tr><th>objective</th><th>model</th><th>verdict</th>'
            "<th>answer</th><th>margin / why not</th></tr></thead><tbody>" + "".join(rows_html) + "</tbody></table>")
