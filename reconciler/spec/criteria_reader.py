"""Reading ``spec.criteria`` of an Experiment: objectives, rewards, limits and the method.

A mixin of the Experiment reader (``spec.loader``), on the shared field readers
(``spec.reader``).
"""

from __future__ import annotations

from ruamel.yaml.comments import CommentedMap

from reconciler.spec.model import Criteria, Objective, Reward
from reconciler.spec.reader import FieldReader
from reconciler.spec.yamldoc import excerpt

__all__ = ["CriteriaReader"]


class CriteriaReader(FieldReader):
    """Reads an Experiment's ``spec.criteria``."""

    def _criteria(self, node: CommentedMap) -> Criteria:
        where = "spec.criteria"
        self._unknown(
            node,
            where,
            {
                "requestCount",
                "objectives",
                "rewards",
                "indicators",
                "failureLimit",
                "noDataLimit",
                "method",
                "confidence",
                "minRequestCount",
            },
        )

        def objective(item: CommentedMap, at: str) -> Objective:
            self._unknown(item, at, {"metric", "upperLimit", "lowerLimit"})
            metric = self._req(item, "metric", at)
            upper = self._number(item, "upperLimit", at)
            lower = self._number(item, "lowerLimit", at)
            if upper is None and lower is None:
                raise self._error(
                    self._at(item), f"'{at}' has neither 'upperLimit' nor 'lowerLimit'"
                )
            if node.get("method") != "point" and (upper == 0 or lower == 1):
                key = "upperLimit" if upper == 0 else "lowerLimit"
                self._warn(
                    self._at(item, key),
                    f"'{at}.{key}: {0 if upper == 0 else 1}' can never pass if the metric is a "
                    "proportion: no finite sample shows a rate of exactly 0 or 1 at any "
                    "confidence, so every run ends without a winner. Use a small margin "
                    "(0.001) or 'spec.criteria.method: point'",
                )
            return Objective(metric=metric, upper_limit=upper, lower_limit=lower)

        def reward(item: CommentedMap, at: str) -> Reward:
            self._unknown(item, at, {"metric", "preferredDirection"})
            metric = self._req(item, "metric", at)
            direction = self._req(item, "preferredDirection", at)
            if direction not in {"High", "Low"}:
                raise self._error(
                    self._at(item, "preferredDirection"),
                    f"'{at}.preferredDirection' must be High or Low, not {excerpt(direction)}",
                )
            return Reward(metric=metric, preferred_direction=direction)

        indicators = []
        for index, item in enumerate(self._seq(node, "indicators", where)):
            if not isinstance(item, str):
                raise self._error(
                    self._at(node, "indicators"), f"'{where}.indicators[{index}]' must be a name"
                )
            indicators.append(item)
        return Criteria(
            request_count=self._str(node, "requestCount", where),
            objectives=tuple(
                self._each_map(
                    self._seq(node, "objectives", where), f"{where}.objectives", objective
                )
            ),
            rewards=tuple(
                self._each_map(self._seq(node, "rewards", where), f"{where}.rewards", reward)
            ),
            indicators=tuple(indicators),
            failure_limit=self._int(node, "failureLimit", where, 3, low=1, high=1000),
            no_data_limit=self._int(node, "noDataLimit", where, 5, low=1, high=1000),
            method=self._method(node, where),
            confidence=self._confidence(node, where),
            min_request_count=(
                self._int(node, "minRequestCount", where, 1, low=1, high=10**12)
                if node.get("minRequestCount") is not None
                else None
            ),
        )

    def _method(self, node: CommentedMap, where: str) -> str:
        method = self._str(node, "method", where) or "exact"
        if method == "wilson":
            self._warn(
                self._at(node, "method"),
                f"'{where}.method: wilson' now means 'exact': proportions are judged with "
                "exact Clopper-Pearson bounds and Beta posteriors; write 'exact'",
            )
            return "exact"
        if method not in {"exact", "point"}:
            raise self._error(
                self._at(node, "method"),
                f"'{where}.method' must be 'exact' (proportions judged with exact bounds and "
                f"posteriors) or 'point' (plain thresholds), not {excerpt(method)}",
            )
        return method

    def _confidence(self, node: CommentedMap, where: str) -> float:
        value = self._number(node, "confidence", where)
        if value is None:
            return 0.95
        if not 0.5 <= value < 1.0:  # noqa: PLR2004 - the meaningful range of a confidence
            raise self._error(
                self._at(node, "confidence"),
                f"'{where}.confidence' must be at least 0.5 and below 1, such as 0.95",
            )
        return value
