"""Scores radiologists use, from lung and lesion masks: involvement per lung and zone, a CT severity
score, distribution words and an RSNA-consensus pattern *suggestion*.

Conventions (stated in every report):

- **Zones**: each lung is cut into upper / middle / lower thirds of its own craniocaudal extent,
  giving six zones (there is no lobe segmentation; zones only approximate lobes).
- **CT severity score**: 0-5 per zone with the per-lobe thresholds of Pan et al. (Radiology 2020;
  after Chung et al., Radiology 2020), read on the involved fraction f of the zone (`SEVERITY_BANDS`,
  edges exactly as the paper's integer percentages 5, 25, 26-49, 50-75, > 75 put them):

  =====  =======================
  score  involved fraction f
  =====  =======================
  0      f < 0.5 % (`SCORE_FLOOR`)
  1      0.5 % <= f < 5 %
  2      5 % <= f <= 25 %
  3      25 % < f < 50 %
  4      50 % <= f <= 75 %
  5      f > 75 %
  =====  =======================

  Total 0-30 over the six zones (the lobar score is 0-25). A zone under `SCORE_FLOOR` involvement
  scores 0: below the level this HU method reads in normal lungs.
- **Pattern**: a rule over the measured distribution, worded after the RSNA consensus statement
  (Simpson et al., Radiology: Cardiothoracic Imaging 2020): typical / indeterminate / atypical /
  negative. It is a rule-based suggestion for a reader, never a diagnosis: it sees neither
  morphology (rounded, reverse halo, tree-in-bud, cavitation) nor clinical context.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from covidct.quant.lungs import LUNG_LABELS, bounding_box
from covidct.quant.regions import ZONES, LungRegions

SEVERITY_BANDS = ((0.05, False, 1), (0.25, True, 2), (0.50, False, 3), (0.75, True, 4))
"""(upper edge of the involved fraction, edge included?, score), in order; above the last edge: 5.
So 0.05 -> 2, 0.25 -> 2, 0.5 -> 4, 0.75 -> 4 (Pan et al.: 5-25 % -> 2, 50-75 % -> 4)."""
SCORE_FLOOR = 0.005
"""Zones with less than 0.5 % involvement score 0 (normal lungs read up to ~0.1-0.3 % with this method)."""
MAX_SCORE_PER_ZONE = 5
INVOLVED_FRACTION = 0.01
"""A lung is 'involved' when at least 1 % of it is lesion."""
NEGATIVE_MAX_FRACTION = 0.01
"""Below 1 % of total lung volume, no pneumonia pattern is suggested ('negative')."""
PREDOMINANCE_RATIO = 1.5
"""A region is 'predominant' when its involved fraction is >= 1.5x every other region's."""
UNILATERAL_SHARE = 0.9
"""Lesion volume at least this share in one lung = unilateral."""
GGO_PREDOMINANT_SHARE = 0.5
"""Ground glass is predominant when it is at least half of the lesion volume."""
CONSOLIDATION_PREDOMINANT_SHARE = 0.5
PATTERN_LABEL = "rule-based suggestion after the RSNA consensus categories; not a diagnosis"
SEVERITY_CONVENTION = (
    "0-5 per zone (Pan et al. 2020 lobar thresholds: 0 none, 1 <5%, 2 5-25%, 3 >25-<50%, 4 50-75%, 5 >75%) "
    "on six zones (upper/middle/lower thirds of each lung, an approximation of the five lobes); total 0-30; "
    f"zones under {SCORE_FLOOR:.1%} involvement score 0"
)


@dataclass
class ZoneStats:
    """One lung zone: volumes in ml, ``involvement`` = lesion / lung volume there, ``score`` 0-5."""

    lung_ml: float
    lesion_ml: float
    ggo_ml: float
    consolidation_ml: float
    involvement: float
    score: int


@dataclass
class Pattern:
    """An RSNA-consensus category suggested by ``rule`` (plain words), with its label."""

    category: str
    rule: str
    label: str = PATTERN_LABEL


@dataclass
class SeverityReport:
    """JSON-able scores of one scan (``to_dict``). Fractions are in [0, 1]."""

    lung_ml: dict[str, float]
    lesion_ml: dict[str, float]
    ggo_ml: float
    consolidation_ml: float
    involvement: dict[str, float]
    zones: dict[str, ZoneStats]
    severity_total: int
    severity_max: int
    severity_convention: str
    peripheral_involvement: float
    central_involvement: float
    distribution: list[str]
    pattern: Pattern
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line: involvement, severity, distribution and the suggested pattern."""
        words = ", ".join(self.distribution) or "no distribution"
        inv = self.involvement
        return (
            f"{inv['total']:.1%} of lung volume involved (right {inv['right']:.1%}, left {inv['left']:.1%}); "
            f"CT severity score {self.severity_total}/{self.severity_max}; {words}; "
            f"pattern: {self.pattern.category} ({self.pattern.label})"
        )


def severity_score(involvement: float) -> int:
    """0-5 score of one zone from its involved fraction (the table in this module's docstring)."""
    if involvement < SCORE_FLOOR:
        return 0
    for upper, inclusive, score in SEVERITY_BANDS:
        if involvement < upper or (inclusive and involvement == upper):
            return score
    return MAX_SCORE_PER_ZONE


def predominant(fractions: dict[str, float]) -> str | None:
    """The key whose value is >= `PREDOMINANCE_RATIO` x every other value (and > 0), else None."""
    best = max(fractions, key=fractions.get)
    others = [v for k, v in fractions.items() if k != best]
    if fractions[best] > 0 and all(fractions[best] >= PREDOMINANCE_RATIO * v for v in others):
        return best
    return None


def _distribution(report_inv: dict[str, float], zones: dict[str, ZoneStats], periph: float, central: float
                  ) -> list[str]:
    """Words: bilateral / unilateral (side), peripheral / central, <zone>-zone predominant."""
    if report_inv["total"] < NEGATIVE_MAX_FRACTION:
        return []
    involved = [side for side in LUNG_LABELS.values() if report_inv[side] >= INVOLVED_FRACTION]
    if len(involved) == 2:
        words = ["bilateral"]
    else:
        words = [f"unilateral ({involved[0]})"] if involved else ["scattered"]
    region = predominant({"peripheral": periph, "central": central})
    if region:
        words.append(f"{region} predominant")
    by_level = {}
    for level in ZONES:
        lung = sum(zones[f"{side} {level}"].lung_ml for side in LUNG_LABELS.values())
        lesion = sum(zones[f"{side} {level}"].lesion_ml for side in LUNG_LABELS.values())
        by_level[level] = lesion / lung if lung else 0.0
    level = predominant(by_level)
    if level:
        words.append(f"{level}-zone predominant")
    return words


def suggest_pattern(involvement: dict[str, float], lesion_ml: dict[str, float], ggo_ml: float,
                    consolidation_ml: float, distribution: list[str]) -> Pattern:
    """RSNA-consensus category from the measured distribution; the returned rule says why."""
    total = lesion_ml["total"]
    if involvement["total"] < NEGATIVE_MAX_FRACTION or total <= 0:
        return Pattern("negative", f"less than {NEGATIVE_MAX_FRACTION:.0%} of lung volume involved")
    ggo_share, cons_share = ggo_ml / total, consolidation_ml / total
    side_share = max(lesion_ml["right"], lesion_ml["left"]) / total
    bilateral_peripheral = "bilateral" in distribution and "peripheral predominant" in distribution
    if bilateral_peripheral and ggo_share >= GGO_PREDOMINANT_SHARE:
        return Pattern("typical", f"bilateral, peripheral-predominant, ground glass = {ggo_share:.0%}")
    if side_share >= UNILATERAL_SHARE and cons_share >= CONSOLIDATION_PREDOMINANT_SHARE:
        return Pattern("atypical", f"unilateral ({side_share:.0%} in one lung), consolidation-predominant "
                                   f"({cons_share:.0%} of lesion volume): lobar/segmental consolidation")
    return Pattern(
        "indeterminate",
        "involvement present without the typical (bilateral, peripheral, ground-glass) "
        "or atypical (unilateral consolidation) distribution",
    )


def _ml(mask: np.ndarray, voxel_ml: float) -> float:
    return round(float(np.count_nonzero(mask)) * voxel_ml, 3)


def score_scan(regions: LungRegions, ggo: np.ndarray, consolidation: np.ndarray) -> SeverityReport:
    """All scores of one scan.

    Args:
        regions: the scan's `LungRegions` (lung labels 1 right / 2 left, zones, periphery, spacing).
        ggo, consolidation: (z, y, x) bool lesion masks on the same grid (inside the lungs).
    """
    lung_labels, zmap, peripheral = regions.labels, regions.zones, regions.peripheral
    voxel_ml = regions.voxel_ml
    if lung_labels.any():  # every count below is inside the lungs: the lungs' box holds them all
        box = bounding_box(lung_labels > 0)
        lung_labels, zmap, peripheral = lung_labels[box], zmap[box], peripheral[box]
        ggo, consolidation = ggo[box], consolidation[box]
    lesion = (ggo | consolidation) & (lung_labels > 0)
    lung_ml = {name: _ml(lung_labels == lab, voxel_ml) for lab, name in LUNG_LABELS.items()}
    lung_ml["total"] = round(lung_ml["right"] + lung_ml["left"], 3)
    lesion_ml = {name: _ml(lesion & (lung_labels == lab), voxel_ml) for lab, name in LUNG_LABELS.items()}
    lesion_ml["total"] = round(lesion_ml["right"] + lesion_ml["left"], 3)
    involvement = {k: round(lesion_ml[k] / lung_ml[k], 5) if lung_ml[k] else 0.0 for k in lung_ml}
    zones = {}
    for lab, side in LUNG_LABELS.items():
        for k, level in enumerate(ZONES):
            region = (zmap == k + 1) & (lung_labels == lab)
            z_lung, z_lesion = _ml(region, voxel_ml), _ml(lesion & region, voxel_ml)
            inv = round(z_lesion / z_lung, 5) if z_lung else 0.0
            z_ggo, z_cons = _ml(ggo & region, voxel_ml), _ml(consolidation & region, voxel_ml)
            zones[f"{side} {level}"] = ZoneStats(z_lung, z_lesion, z_ggo, z_cons, inv, severity_score(inv))
    lung = lung_labels > 0
    periph_inv = float(np.count_nonzero(lesion & peripheral)) / max(np.count_nonzero(peripheral & lung), 1)
    central_inv = float(np.count_nonzero(lesion & ~peripheral)) / max(np.count_nonzero(lung & ~peripheral), 1)
    words = _distribution(involvement, zones, periph_inv, central_inv)
    ggo_ml, cons_ml = _ml(ggo & lung, voxel_ml), _ml(consolidation & lung, voxel_ml)
    return SeverityReport(
        lung_ml=lung_ml,
        lesion_ml=lesion_ml,
        ggo_ml=ggo_ml,
        consolidation_ml=cons_ml,
        involvement=involvement,
        zones=zones, severity_total=sum(z.score for z in zones.values()),
        severity_max=MAX_SCORE_PER_ZONE * len(zones), severity_convention=SEVERITY_CONVENTION,
        peripheral_involvement=round(periph_inv, 5), central_involvement=round(central_inv, 5),
        distribution=words, pattern=suggest_pattern(involvement, lesion_ml, ggo_ml, cons_ml, words),
    )
