"""``sfd eval --paper-table supp1|supp2``: the supplement's tables, our numbers beside the published ones.

The published numbers and their source are in ``paper_tables.yml`` next to this file. Datasets
are found by name under the data root (``sfd.evaluate.datasets``); LR is MATLAB bicubic of each
HR (``sfd.evaluate.run.evaluate``). What cannot be measured here is said, never guessed: a
missing dataset is a row "not found under DIR", a metric whose ImageNet backbone is missing
is "n/a" with the reason (random backbones are refused: their numbers are not LPIPS/DISTS).

Each of our methods may name the paper column it reproduces (``--model rrdb_sfd=CKPT``); the
table then shows the difference (ours − paper) next to it. In Table 1's layout the best value of each
row is **bold** and the second best _italic_, among the paper's columns and among ours separately (the
two were measured under different conditions); ``crop_sheet.png`` shows the same region from every one
of our systems.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sfd.errors import UsageError
from sfd.evaluate import run
from sfd.evaluate.datasets import DatasetNotFound, data_root, resolve_dataset
from sfd.inference import InferenceSettings
from sfd.metrics import MetricOptions, build, metric_entry

__all__ = [
    "READINGS",
    "find_reading",
    "PaperTable",
    "OurMethod",
    "load_paper_table",
    "parse_method",
    "evaluate_paper_table",
]

TABLES_FILE = Path(__file__).with_name("paper_tables.yml")
DECIMALS = {"psnr": 2, "ssim": 3, "lpips": 3, "dists": 3}  # the supplement's precision
MARKS_LEGEND = "**bold**: best, _italic_: second best of each row, among the paper's columns and among ours apart"


def rank_marks(values: dict[str, float | None], lower_better: bool, decimals: int) -> dict[str, str]:
    """``{key: "best" | "second"}`` for the best and second-best values at the printed precision (ties share
    a mark); nothing when fewer than two values exist."""
    shown = {k: round(v, decimals) for k, v in values.items() if v is not None}
    if len(shown) < 2:
        return {}
    order = sorted(set(shown.values()), reverse=not lower_better)
    marks = {k: "best" for k, v in shown.items() if v == order[0]}
    if len(order) > 1:
        marks |= {k: "second" for k, v in shown.items() if v == order[1]}
    return marks


def _marked(text: str, mark: str | None) -> str:
    return {"best": f"**{text}**", "second": f"_{text}_"}.get(mark or "", text)


def convention(scale: int, lpips_net: str | None, prefer_ema: bool) -> str:
    """How our columns were measured. The supplement states none of it: each part is our choice
    (the SR literature's usual one), printed beside the differences it decides."""
    net = lpips_net or "alex"
    default = " (the lpips package's default)" if net == "alex" else " (--lpips-net vgg)"
    weights = "EMA weights of sfd checkpoints" if prefer_ema else "raw (non-EMA) weights of sfd checkpoints (--no-ema)"
    return (
        f"convention [our choice; the supplement states none]: PSNR/SSIM on BT.601 Y rounded like MATLAB, "
        f"{scale} px border shaved; LPIPS-{net}{default} and DISTS on whole RGB images; {weights}"
    )


# Supp. Table 2 compares RN50 with ViT-B/16 as the semantic feature extractor, but does not say which
# discriminators each row trained with. ViT-B/16 has no pixel-wise features, so Feat-D cannot run on it;
# three readings follow [choice], each a pair of setups (the run's discriminators and their CLIPs) with
# its shipped configs (docs/evaluation.md).
READINGS: dict[str, dict[str, str]] = {
    "sfd-vs-tgd": {  # full SFD on RN50 against TG-D only on ViT-B/16
        "rn50": "Feat-D RN50 + TG-D RN50",
        "vit_b16": "TG-D ViT-B-16",
        "configs": "classic_rrdb_x4.yml, vit_b16_rrdb_x4.yml",
    },
    "tgd-vs-tgd": {  # both rows TG-D only: the extractor is the only difference
        "rn50": "TG-D RN50",
        "vit_b16": "TG-D ViT-B-16",
        "configs": "tgd_only_rn50_x4.yml, vit_b16_rrdb_x4.yml",
    },
    "mixed": {  # Feat-D stays on RN50 in both rows; TG-D's extractor changes
        "rn50": "Feat-D RN50 + TG-D RN50",
        "vit_b16": "Feat-D RN50 + TG-D ViT-B-16",
        "configs": "classic_rrdb_x4.yml, vit_b16_tgd_rn50_featd_x4.yml",
    },
}


def checkpoint_setup(spec: str) -> str | None:
    """The discriminators an sfd checkpoint trained with and their CLIPs, as READINGS spells them
    ("Feat-D RN50 + TG-D ViT-B-16"); None when ``spec`` is not an SFD-trained checkpoint."""
    from sfd import checkpoint as ckpt_io

    try:
        ckpt = ckpt_io.load(spec)
    except Exception:  # a released model file, a named model: no config to read
        return None
    parts, cfg = [], ckpt.config
    if "feat_d" in ckpt.discriminators:
        parts.append(f"Feat-D {(ckpt.clip or {}).get('model') or cfg.clip.model}")
    if "tg_d" in ckpt.discriminators:
        record = ckpt.clip_tg_d or ckpt.clip or {}
        parts.append(f"TG-D {record.get('model') or cfg.tg_d_clip_model}")
    return " + ".join(parts) or None


def find_reading(declared: str | None, setups: dict[str, str]) -> tuple[str | None, str]:
    """Supp. Table 2's reading: ``declared`` (--reading), checked against the checkpoints' ``setups``
    (column -> setup), or the one reading those setups fit. Returns (reading or None, how it was found)."""
    fits = [r for r, cols in READINGS.items() if all(cols[c] == s for c, s in setups.items())]
    shown = "; ".join(f"{c}: {s}" for c, s in setups.items())
    if declared:
        if declared not in fits:
            raise UsageError(
                f"--reading {declared} wants {READINGS[declared]['rn50']} (rn50) and "
                f"{READINGS[declared]['vit_b16']} (vit_b16), but the checkpoints trained with {shown}"
            )
        return declared, "declared (--reading)" + (f", matching the checkpoints ({shown})" if setups else "")
    if not fits:
        raise UsageError(f"the checkpoints ({shown}) fit no reading of Supp. Table 2: {', '.join(READINGS)}")
    if len(fits) == 1:
        return fits[0], f"from the checkpoints' configs ({shown})"
    why = f"the checkpoints ({shown}) fit {', '.join(fits)}" if setups else "no SFD-trained checkpoint in a column"
    return None, f"not determined: {why}; give --reading"


@dataclass
class PaperTable:
    key: str
    title: str
    layout: str  # "metrics_as_rows" (Table 1) or "methods_as_rows" (Table 2)
    scale: int
    datasets: list[str]
    metrics: list[str]
    columns: dict[str, str]  # key -> the supplement's label
    values: dict[str, dict[str, list[float]]]  # dataset -> metric -> one value per column
    source: str

    def published(self, column: str, dataset: str, metric: str) -> float:
        return self.values[dataset][metric][list(self.columns).index(column)]


@dataclass
class OurMethod:
    name: str  # our label
    spec: str | None  # model spec; None for bicubic
    column: str | None  # the paper column it reproduces, if any


@dataclass
class PaperResult:
    table: PaperTable
    root: Path | None
    ours: list[OurMethod]
    found: dict[str, Path] = field(default_factory=dict)  # dataset -> folder
    missing: dict[str, str] = field(default_factory=dict)  # dataset -> why
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why
    means: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)  # dataset -> ours -> metric
    evaluation: run.EvalResult | None = None
    notes: list[str] = field(default_factory=list)
    convention: str = ""  # how our columns were measured (our choices), printed beside the Δ columns
    reading: str | None = None  # supp2: which reading of the table (READINGS), None when not determined
    reading_how: str = ""  # how the reading was found (declared, or from the checkpoints' configs)

    @property
    def reading_line(self) -> str:
        if not self.reading_how:
            return ""
        what = f"{self.reading} ({READINGS[self.reading]['configs']})" if self.reading else "?"
        return f"reading [our choice; the supplement does not say]: {what}; {self.reading_how}"

    # ---------------------------------------------------------------- cells

    def value(self, method: str, dataset: str, metric: str) -> float | None:
        return self.means.get(dataset, {}).get(method, {}).get(metric)

    def difference(self, method: OurMethod, dataset: str, metric: str) -> float | None:
        v = self.value(method.name, dataset, metric)
        return None if v is None or method.column is None else v - self.table.published(method.column, dataset, metric)

    def _ours_cell(self, method: str, dataset: str, metric: str) -> str:
        if dataset in self.missing:
            return "not found"
        if metric in self.unavailable:
            return "n/a"
        v = self.value(method, dataset, metric)
        return "n/a" if v is None else f"{v:.{DECIMALS[metric]}f}"

    def _diff_cell(self, method: OurMethod, dataset: str, metric: str) -> str:
        d = self.difference(method, dataset, metric)
        return "" if d is None else f"{d:+.{DECIMALS[metric]}f}"

    def marks(self, dataset: str, metric: str) -> dict[str, dict[str, str]]:
        """Best and second best of one row: ``{"paper": {column: mark}, "ours": {name: mark}}``."""
        t, lower = self.table, metric_entry(metric).lower_better
        paper = {c: t.published(c, dataset, metric) for c in t.columns}
        ours = {} if metric in self.unavailable else {m.name: self.value(m.name, dataset, metric) for m in self.ours}
        return {
            "paper": rank_marks(paper, lower, DECIMALS[metric]),
            "ours": rank_marks(ours, lower, DECIMALS[metric]),
        }

    def rows(self) -> list[list[str]]:
        """The table as rows of cells, the first row the header, in the supplement's layout."""
        t, paper = self.table, self.table.columns
        if t.layout == "metrics_as_rows":
            header = ["Benchmark", "Metric", *paper.values()]
            for m in self.ours:
                header.append(f"{m.name} (measured)")
                if m.column:
                    header.append(f"Δ {m.name} − {paper[m.column]}")
            rows = [header]
            for d in t.datasets:
                if d in self.missing:
                    rows.append([d, f"not found under {self.root}"] + [""] * (len(header) - 2))
                    continue
                for metric in t.metrics:
                    marks = self.marks(d, metric)
                    row = [
                        d,
                        metric_entry(metric).label,
                        *(
                            _marked(f"{t.published(c, d, metric):.{DECIMALS[metric]}f}", marks["paper"].get(c))
                            for c in paper
                        ),
                    ]
                    for m in self.ours:
                        row.append(_marked(self._ours_cell(m.name, d, metric), marks["ours"].get(m.name)))
                        if m.column:
                            row.append(self._diff_cell(m, d, metric))
                    rows.append(row)
            return rows
        header = ["Extractor", *(f"{d} {metric_entry(metric).label}" for d in t.datasets for metric in t.metrics)]
        rows = [header]
        for c, label in paper.items():
            rows.append(
                [
                    f"{label} (paper)",
                    *(f"{t.published(c, d, m):.{DECIMALS[m]}f}" for d in t.datasets for m in t.metrics),
                ]
            )
        for m in self.ours:
            cells = [self._ours_cell(m.name, d, x) for d in t.datasets for x in t.metrics]
            rows.append([f"{m.name} (measured)", *cells])
            if m.column:
                rows.append(
                    [
                        f"Δ {m.name} − {paper[m.column]}",
                        *(self._diff_cell(m, d, x) for d in t.datasets for x in t.metrics),
                    ]
                )
        return rows

    def markdown(self) -> str:
        rows = self.rows()
        lines = [
            f"**{self.table.title}**",
            "",
            *([f"_{self.convention}; Δ = ours − paper_", ""] if self.convention else []),
            *([f"_{self.reading_line}_", ""] if self.reading_line else []),
            *([MARKS_LEGEND, ""] if self.table.layout == "metrics_as_rows" else []),
            "| " + " | ".join(rows[0]) + " |",
            "|---|" + "---:|" * (len(rows[0]) - 1),
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes])

    def html(self) -> str:
        rows = self.rows()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        conv = "".join(f"<p><em>{html.escape(x)}</em></p>" for x in (self.convention, self.reading_line) if x)
        return f"<h2>{html.escape(self.table.title)}</h2>{conv}<table><tr>{head}</tr>{body}</table><ul>{notes}</ul>"

    def to_json(self) -> dict:
        t = self.table
        return {
            "table": t.key,
            "title": t.title,
            "source": t.source,
            "data_root": str(self.root) if self.root else None,
            "scale": t.scale,
            "convention": self.convention,
            **(
                {"reading": {"name": self.reading, "how": self.reading_how, **READINGS.get(self.reading or "", {})}}
                if self.reading_how
                else {}
            ),
            "datasets": {
                d: ({"found": str(self.found[d])} if d in self.found else {"not_found": self.missing[d]})
                for d in t.datasets
            },
            "metrics": {
                m: (
                    {"available": False, "reason": self.unavailable[m]}
                    if m in self.unavailable
                    else {"available": True}
                )
                for m in t.metrics
            },
            "paper": {
                label: {d: {m: t.published(c, d, m) for m in t.metrics} for d in t.datasets}
                for c, label in t.columns.items()
            },
            "ours": {
                m.name: {
                    "model": m.spec or "bicubic",
                    "paper_column": t.columns[m.column] if m.column else None,
                    "values": {d: self.means.get(d, {}).get(m.name) for d in self.found},
                    "difference": (
                        {d: {x: self.difference(m, d, x) for x in t.metrics} for d in self.found} if m.column else None
                    ),
                }
                for m in self.ours
            },
            **(
                {"marks": {d: {x: self.marks(d, x) for x in t.metrics} for d in self.found}}
                if t.layout == "metrics_as_rows"
                else {}
            ),
            "notes": self.notes,
        }


def load_paper_table(key: str, path: Path = TABLES_FILE) -> PaperTable:
    data = yaml.safe_load(path.read_text())
    if key not in data["tables"]:
        raise ValueError(f"unknown paper table {key!r}; available: {', '.join(data['tables'])}")
    t = data["tables"][key]
    return PaperTable(
        key, t["title"], t["layout"], t["scale"], t["datasets"], t["metrics"], t["columns"], t["values"], data["source"]
    )


def parse_method(arg: str, table: PaperTable) -> OurMethod:
    """``--model`` value: ``KEY=SPEC`` (KEY a paper column, e.g. rrdb_sfd), ``NAME=SPEC`` or ``SPEC``."""
    name, sep, spec = arg.partition("=")
    if not sep or "/" in name or not name:  # no NAME= prefix (a path may contain "=")
        name, spec = Path(arg).stem, arg
    column = name if name in table.columns else None
    return OurMethod(name, spec, column)


def evaluate_paper_table(
    table: PaperTable,
    ours: list[OurMethod],
    root: str | Path | None,
    metric_names: list[str] | None = None,
    settings: InferenceSettings | None = None,
    prefer_ema: bool = True,
    allow_pickle: bool = False,
    keep_crops: bool = False,
    metric_options: MetricOptions | None = None,
    save_sr: str | Path | None = None,
    progress: bool = True,
    reading: str | None = None,
) -> PaperResult:
    """Measure ``ours`` on the table's datasets (those found under ``root``) with the table's metrics.
    supp2: ``reading`` (one of READINGS) is checked against the checkpoints' configs, or found from them."""
    names = [m.name for m in ours]
    if len(set(names)) != len(names):
        raise ValueError(f"two methods share a name: {names}; name them with --model NAME=PATH")
    base = data_root(root)
    result = PaperResult(table, base, ours)
    if table.key == "supp2":
        setups = {m.column: checkpoint_setup(m.spec) for m in ours if m.column and m.spec}
        result.reading, result.reading_how = find_reading(reading, {c: s for c, s in setups.items() if s})
    elif reading:
        raise UsageError(f"--reading is for --paper-table supp2, not {table.key}")
    for d in table.datasets:
        try:
            result.found[d] = resolve_dataset(d, base)
        except DatasetNotFound as err:
            result.missing[d] = str(err)
    wanted = metric_names or table.metrics
    unknown = [m for m in wanted if m not in table.metrics]
    if unknown:
        raise ValueError(f"{table.key} has no metric {', '.join(unknown)}; its metrics: {', '.join(table.metrics)}")
    settings = settings or InferenceSettings()
    options = metric_options or MetricOptions(device=settings.device)  # ImageNet backbones only, never random ones
    metrics = []
    for name in table.metrics:
        if name not in wanted:
            result.unavailable[name] = "not asked for (--metrics)"
            continue
        try:
            metrics.append(build(name, options))
        except FileNotFoundError as err:  # LPIPS/DISTS without their ImageNet backbone
            result.unavailable[name] = str(err)

    methods = [
        run.bicubic_method(table.scale)
        if m.spec is None
        else run.model_method(
            m.spec, table.scale, settings, name=m.name, prefer_ema=prefer_ema, allow_pickle=allow_pickle
        )
        for m in ours
    ]
    combined = run.EvalResult(table.scale, metrics, methods, [])
    for d, folder in result.found.items():
        part = run.evaluate(
            methods, [folder], table.scale, metrics, keep_crops=keep_crops, save_sr=save_sr, progress=progress
        )
        folder_name = part.datasets[0]
        for r in part.records:  # datasets by the table's names (B100 -> BSDS100)
            r["dataset"] = d
        combined.records += part.records
        combined.crops.update({(d, img): c for (_, img), c in part.crops.items()})
        combined.crop_boxes.update({(d, img): b for (_, img), b in part.crop_boxes.items()})
        combined.datasets.append(d)
        combined.notes = part.notes  # the convention and each metric's description
        result.notes.append(f"{d}: HR images in {folder}" + (f" (as {folder_name})" if folder_name != d else ""))
    result.convention = convention(table.scale, options.lpips_net, prefer_ema)
    result.means = combined.means() if combined.datasets else {}
    result.evaluation = combined
    t = table
    result.notes = [f"published numbers: {t.source}"] + combined.notes + result.notes
    result.notes += [f"{d}: not found under {base}" for d in result.missing]
    result.notes += [f"{m.upper()}: n/a here: {why}" for m, why in result.unavailable.items()]
    for m in ours:
        if m.column:
            result.notes.append(
                f"{m.name}: {m.spec}, compared with the paper's {t.columns[m.column]} (Δ = ours − paper)"
            )
        elif m.spec:
            result.notes.append(
                f"{m.name}: {m.spec} (no paper column; --model KEY={m.spec} with KEY one of "
                f"{', '.join(t.columns)} compares it)"
            )
    return result
