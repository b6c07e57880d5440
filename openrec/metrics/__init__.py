"""Recognition metrics: word accuracy and 1 - normalised edit distance, per set and combined."""
from .rec_metric import RecMetric, edge_error_counts, edit_distance, normalize_text, summarize_sets

__all__ = ["RecMetric", "edge_error_counts", "edit_distance", "normalize_text", "summarize_sets", "build_metric"]


def build_metric(cfg: dict) -> RecMetric:
    from ..registry import METRICS
    return METRICS.build(cfg, where="Metric")
