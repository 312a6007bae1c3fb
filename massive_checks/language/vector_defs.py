"""What a spec writes under `vectors:`: a steering vector's definition (contrast set, layer, token
window, method) and its cleaning (dims zeroed by name or by the massive rule)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from massive_checks.language.definitions import AS_TUPLE, Frozen, Index, NonEmpty, WindowText

Method = Literal["mean_diff", "probe", "pca"]
METHODS: tuple[str, ...] = get_args(Method)


def _sorted(dims: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(dims))


class Cleaning(Frozen):
    """Zero these dims (then renormalise): `dims: [..]`, the `top: K` dims by mean |activation| in
    the window, or (written `clean: massive`) the massive dims at the vector's layer (the paper's
    rule on the contrast texts)."""

    dims: Annotated[tuple[Index, ...], Field(min_length=1), AS_TUPLE, AfterValidator(_sorted)] | None = None
    top: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_way(cls, written: Any) -> Any:
        """A mapping gives exactly one of dims and top (massive is Cleaning.massive(), built, not written)."""
        if isinstance(written, dict) and sum(written.get(k) is not None for k in ("dims", "top")) != 1:
            raise PydanticCustomError("cleaning", "give one of dims: [..] or top: K (or write clean: massive)")
        return written

    @classmethod
    def massive(cls) -> Cleaning:
        return cls.model_construct()  # neither dims nor top: the one way not written as a mapping

    @classmethod
    def of(cls, value: Any) -> Cleaning:
        """From a spec's `clean:` or a measure's `dims` / `without`: "massive", "top:K", a list of
        dims, a Cleaning."""
        if isinstance(value, Cleaning):
            return value
        if value == "massive":
            return cls.massive()
        if isinstance(value, str):
            return cls(top=int(value.removeprefix("top:")))
        return cls(dims=tuple(value))

    @property
    def kind(self) -> str:
        return "dims" if self.dims is not None else "top" if self.top is not None else "massive"

    def text(self) -> str:
        if self.dims is not None:
            return f"dims {list(self.dims)}"
        return f"top-{self.top} dims by |activation|" if self.top is not None else "massive dims"


def _massive_word(value: Any) -> Any:
    return Cleaning.massive() if value == "massive" else value


class VectorDef(Frozen):
    """A steering vector: a contrast set's pooled block outputs at one layer, and a method."""

    pairs: NonEmpty  # built-in set (refusal, sentiment) or a JSONL file
    layer: Index  # block output (0-based)
    window: WindowText  # last:K | first:K | all
    method: Method
    clean: Annotated[
        Cleaning | None,
        BeforeValidator(_massive_word, json_schema_input_type=Union[Literal["massive"], Cleaning, None]),
    ] = None  # massive | {dims: [..]} | {top: K}

    def text(self) -> str:
        cleaned = f", cleaned: {self.clean.text()}" if self.clean else ""
        return f"{self.method} on {self.pairs} at layer {self.layer}, window {self.window}{cleaned}"
