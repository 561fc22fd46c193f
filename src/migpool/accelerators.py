"""Accelerator requirements, as the reference API writes them: `accelerators.A100()`, `H100(memory="80GB")`.

migpool does not provision machines, so an accelerator is a check: the node's GPUs (or the simulated ones)
must be of this family (and memory, if given) before anything is changed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import PluginError


@dataclass(frozen=True)
class Accelerator:
    family: str
    memory: str | None = None

    def matches(self, gpu_name: str) -> bool:
        name = gpu_name.upper().replace(" ", "")
        if self.family.upper() not in name:
            return False
        if self.memory:
            want = re.sub(r"[^0-9]", "", self.memory)
            return f"{want}GB" in name or f"{want}G" in name
        return True

    def check(self, gpu_names: list[str]) -> None:
        if not gpu_names or not all(self.matches(n) for n in gpu_names):
            want = self.family + (f" with {self.memory}" if self.memory else "")
            raise PluginError(
                f"this node's GPUs are {gpu_names or 'none'}, not {want}; run on a node with that GPU, "
                f"or simulate one (e.g. MIGPOOL_SIMULATE={self.family}-80GB)"
            )


def _family(name: str) -> type:
    def make(memory: str | None = None) -> Accelerator:
        return Accelerator(name, memory)

    make.__name__ = name.replace("-", "_").replace(" ", "_")
    make.__doc__ = f"Require {name} GPUs (optionally of a given memory, e.g. memory='80GB')."
    return make  # type: ignore[return-value]


A100 = _family("A100")
A30 = _family("A30")
H100 = _family("H100")
H200 = _family("H200")
H20 = _family("H20")
GH200 = _family("GH200")
B200 = _family("B200")
GB200 = _family("GB200")
RTX_PRO_6000 = _family("RTX PRO 6000")
