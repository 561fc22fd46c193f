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
        """Whether the GPU's name holds the family's words as whole words, in order ("A10" is not an A100)."""
        name = re.findall(r"[A-Z0-9]+", gpu_name.upper())
        words = re.findall(r"[A-Z0-9]+", self.family.upper())
        if not any(name[i : i + len(words)] == words for i in range(len(name))):
            return False
        squeezed = gpu_name.upper().replace(" ", "")
        if self.memory:
            want = re.sub(r"[^0-9]", "", self.memory)
            return f"{want}GB" in squeezed or f"{want}G" in squeezed
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


# the reference system's accelerator names (its accelerators module), as functions of the same names: the
# underscores there are spaces in the GPU's name (RTX_4090 checks for an "RTX 4090")
NAMES = """H100 H200 GH200 B100 B200 GB200 A100 A800 A40 A10 A10G A16 A2 A30 H20 L4 L40 L40S T4 T4G V100 P100 P40 P4 K80
RTX_5090 RTX_5080 RTX_5070_Ti RTX_5070 RTX_5060_Ti RTX_5060 RTX_4090 RTX_4090D RTX_4080_Super RTX_4080
RTX_4070_Ti_Super RTX_4070_Ti RTX_4070_Super RTX_4070 RTX_4060_Ti RTX_4060 RTX_3090_Ti RTX_3090 RTX_3080_Ti
RTX_3080 RTX_3070_Ti RTX_3070 RTX_3060_Ti RTX_3060 RTX_3060_Laptop RTX_3050 RTX_2080_Ti RTX_2080_Super RTX_2080
RTX_2070_Super RTX_2070 RTX_2060_Super RTX_2060 GTX_1660_Ti GTX_1660_Super GTX_1660 GTX_1080_Ti GTX_1080
GTX_1070_Ti GTX_1070 GTX_1060 Titan_Xp Titan_V RTX_6000_Ada RTX_5880_Ada RTX_5000_Ada RTX_PRO_6000 RTX_PRO_4000
RTX_PRO_4500 RTX_A6000 RTX_A5000 RTX_A5000_Pro RTX_A4000 RTX_A4500 RTX_A2000 Quadro_RTX_8000 Quadro_RTX_5000
Quadro_RTX_6000 Quadro_RTX_4000 Quadro_P4000 MI300X MI300B MI300A MI250X MI250 MI210 MI100 MI50 RadeonPro_V710
RadeonPro_V520 Instinct_MI25 Trainium1 Trainium2 Trainium3 Inferentia1 Inferentia2 Gaudi Gaudi2 Gaudi3 TPUv2
TPUv3 TPUv4 TPUv5e TPUv5p TPUv6 TPUv2_8 TPUv3_8 TPUv3_32 TPUv4_64 TPUv5e_4 TPUv5p_8""".split()
globals().update({n: _family(n.replace("_", " ")) for n in NAMES})


def Custom(name: str, memory: str | None = None) -> Accelerator:  # noqa: N802 - the reference's name
    """Require GPUs whose name contains `name` (optionally of a given memory)."""
    return Accelerator(name, memory)


def named(name: str | Accelerator) -> Accelerator:
    """`accelerator="A100"` (a name, as the reference takes it) or an Accelerator."""
    return name if isinstance(name, Accelerator) else Accelerator(name)
