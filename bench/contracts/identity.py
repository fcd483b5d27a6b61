"""The identity of a cell: model x recipe x backend x precision x batch size x target.

One type, used by the config (the cell matrix), the store (its columns), the tables, compare,
history and the CLI. Its text form ``model/recipe/backend/precision/bN/target`` is the cell key.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

FIELDS = ("model", "recipe", "backend", "precision", "batch", "target")


@dataclass(frozen=True, order=True)
class CellId:
    """Which cell: the six parts, each a name (``batch`` an integer)."""

    model: str
    recipe: str
    backend: str
    precision: str
    batch: int
    target: str

    @property
    def key(self) -> str:
        """``model/recipe/backend/precision/bN/target``: the cell key in the store, files and reports."""
        return f"{self.model}/{self.recipe}/{self.backend}/{self.precision}/b{self.batch}/{self.target}"

    def __str__(self) -> str:
        return self.key

    def parts(self) -> tuple[str, str, str, str, int, str]:
        return astuple(self)  # type: ignore[return-value]

    @property
    def measurement(self) -> tuple[str, str, str, int]:
        """(model, backend, precision, batch): what a recipe is compared within (its dense reference)."""
        return (self.model, self.backend, self.precision, self.batch)

    @classmethod
    def parse(cls, text: str) -> CellId:
        """A cell key back into its parts; ValueError in one line naming the expected form."""
        parts = text.strip().split("/")
        if len(parts) != 6 or not parts[4].startswith("b") or not parts[4][1:].isdigit() or not all(parts):
            raise ValueError(f"{text!r} is not a cell: give model/recipe/backend/precision/bN/target, e.g. small_cnn/dense/onnxruntime/fp32/b1/local")
        model, recipe, backend, precision, batch, target = parts
        return cls(model, recipe, backend, precision, int(batch[1:]), target)

    @classmethod
    def of(cls, obj: object) -> CellId:
        """The identity of anything carrying the six attributes (a store record, a table row)."""
        return cls(*(getattr(obj, f) for f in FIELDS))  # type: ignore[arg-type]


@dataclass
class CellFields:
    """The cell key and the six parts as plain fields: the base of every flat record of one cell
    (a store row, a report row, a comparison), so the identity's fields are declared here once.

    Subclasses add their own fields after these; :attr:`id` is the typed identity."""

    cell_key: str
    model: str
    recipe: str
    backend: str
    precision: str
    batch: int
    target: str

    @property
    def id(self) -> CellId:
        """Which cell this is: model, recipe, backend, precision, batch and target."""
        return CellId.of(self)
