"""A conditional-logit (listwise) decision head over a link's candidate pool plus NIL.

Why this model: the signals are few, on comparable scales, and their useful combination is
close to linear (a weighted vote of text, image, alias and caption agreement), while the answer
is one choice among a variable number of candidates. A conditional logit scores every candidate
with one weight vector, adds NIL with its own small model, and is trained by maximum likelihood,
so its softmax is a calibrated distribution by construction (checked on held-out folds in the
dev metrics it records). It fits in seconds on a few thousand links and costs a matrix-vector
product at link time.

The head is tied to what it was fitted on: one KB and its embedders (`kb_fingerprint`), or, for a
head fitted on several benchmarks, the embedders alone (`embedder_fingerprint`, "scope":
"embedders"): its weights mean something only for the similarity distributions those produce,
so a head for another KB (a KB head) or other embedders (either) is refused at load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from retlink.core.config import AUTO_HEAD, GENERIC_HEAD
from retlink.core.errors import ConfigError

#: the NIL option's key in distributions (matches retlink.core.types.NIL)
NIL = "NIL"
FORMAT = "retlink-decision-head/1"


@dataclass(frozen=True)
class Group:
    """One training link: its pool's feature rows, the NIL row and the index of the gold option
    (`len(rows)` means NIL)."""

    rows: np.ndarray
    nil: np.ndarray
    gold: int
    weight: float = 1.0


def kb_fingerprint(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a head depends on in a KB: its entities and the embedders that made its vectors."""
    return {
        "source_sha256": manifest.get("source_sha256"),
        "count": manifest.get("count"),
        "text_model": manifest.get("text_model"),
        "image_model": manifest.get("image_model"),
    }


def head_file(head: Path | str) -> Path:
    """The file `decision.head` names: a path, or `generic` (and `auto`) for the head the package ships."""
    if str(head) in (GENERIC_HEAD, AUTO_HEAD):
        return Path(str(files("retlink") / "data" / "heads" / f"{GENERIC_HEAD}.head.json"))
    return Path(head)


def embedder_fingerprint(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a head fitted across KBs depends on: the embedders that made every KB's vectors."""
    return {"text_model": manifest.get("text_model"), "image_model": manifest.get("image_model")}


def _bound_to(head_fingerprint: dict[str, Any], kb: dict[str, Any]) -> dict[str, Any]:
    """The part of the KB's fingerprint a head must match: all of it for a KB head, the
    embedders for an embedders-scoped one."""
    if head_fingerprint.get("scope") == "embedders":
        return {**embedder_fingerprint(kb), "scope": "embedders"}
    return kb


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


#: the feature the agent's own ranking sorts by (fused similarity plus the alias bonus, as a gap)
FALLBACK_FEATURE = "fused_gap"


def _fallback_prior(
    groups: list[Group], features: list[str], nil_features: list[str], mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Standardised weights of the head that ranks by the fused score alone: `fused_gap`'s
    weight and the NIL row's, fitted on `groups` with every other weight held at zero."""
    if FALLBACK_FEATURE not in features:
        raise ValueError(f"prior 'fallback' needs the {FALLBACK_FEATURE!r} feature (the agent's); these links have {features}")
    k = features.index(FALLBACK_FEATURE)
    sub = [Group(g.rows[:, [k]], g.nil, g.gold, g.weight) for g in groups]
    one = DecisionHead.fit(sub, [FALLBACK_FEATURE], nil_features, l2=1e-4)
    w0 = np.zeros(len(features))
    # the one-feature fit standardised the same column the same way
    w0[k] = float(one.weights[0]) * float(scale[k]) / float(one.scale[0])
    return w0, np.asarray(one.nil_weights, dtype=np.float64)


@dataclass
class DecisionHead:
    features: list[str]
    nil_features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    nil_bias: float
    nil_weights: np.ndarray
    #: weight of log p_reasoner added to each option's logit (0: the reasoner is ignored)
    reasoner_weight: float = 0.0
    fingerprint: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: how the features it was fitted on were computed beyond their names (`PoolFeatures.definition`)
    feature_definition: str | None = None

    # -- inference ---------------------------------------------------------------------------

    def logits(self, rows: np.ndarray, nil: np.ndarray) -> np.ndarray:
        """Logits of the pool's candidates followed by NIL's."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.features))
        cand = ((rows - self.mean) / self.scale) @ self.weights
        nil_logit = self.nil_bias + float(np.asarray(nil, dtype=np.float64) @ self.nil_weights)
        return np.append(cand, nil_logit)

    def top_margin(self, rows: np.ndarray, nil: np.ndarray) -> tuple[int, float]:
        """(the answer's index, NIL = len(rows); its logit minus the best rival's): how sure the
        head is, which a cascade's gate reads. inf when nothing competes."""
        logits = self.logits(rows, nil)
        order = np.argsort(-logits)
        return int(order[0]), float(logits[order[0]] - logits[order[1]]) if len(logits) > 1 else float("inf")

    def distribution(
        self,
        ids: list[str],
        rows: np.ndarray,
        nil: np.ndarray,
        reasoner: dict[str, float] | None = None,
        restrict: list[str] | None = None,
    ) -> dict[str, float]:
        """Probability of each candidate id and NIL. With `reasoner` probabilities and a nonzero
        reasoner weight, log p_reasoner is added; `restrict` keeps only those ids (plus NIL) and
        renormalises (the options the reasoner saw)."""
        z = self.logits(rows, nil)
        keys = [*ids, NIL]
        if restrict is not None:
            keep = set(restrict) | {NIL}
            idx = [i for i, k in enumerate(keys) if k in keep]
            keys, z = [keys[i] for i in idx], z[idx]
        if reasoner is not None and self.reasoner_weight:
            z = z + self.reasoner_weight * np.log(np.array([reasoner.get(k, 0.0) for k in keys]) + 1e-3)
        p = np.exp(_log_softmax(z))
        return {k: float(v) for k, v in zip(keys, p, strict=True)}

    # -- fitting -----------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        groups: list[Group],
        features: list[str],
        nil_features: list[str],
        *,
        l2: float = 1e-2,
        fingerprint: dict[str, Any] | None = None,
        prior: str | None = None,
    ) -> DecisionHead:
        """Maximum likelihood with an L2 penalty (standardised features), by L-BFGS.

        The penalty pulls the weights toward zero, or, with `prior="fallback"`, toward the head
        that ranks by the agent's own fused score alone (`fused_gap`, its sharpness and NIL's
        weights fitted on these links first): a head fitted on a few benchmarks then departs
        from the ranking that never loses to the baseline only as far as its data pushes it."""
        from scipy.optimize import minimize

        if not groups:
            raise ValueError("no training links: every sample failed or none had a candidate pool")
        d, m = len(features), len(nil_features)
        stacked = np.concatenate([g.rows for g in groups if len(g.rows)])
        mean = stacked.mean(axis=0)
        scale = stacked.std(axis=0)
        scale[scale < 1e-6] = 1.0
        xs = [(g.rows - mean) / scale for g in groups]
        total = sum(g.weight for g in groups)
        w0, v0 = np.zeros(d), np.zeros(m)
        if prior == "fallback":
            w0, v0 = _fallback_prior(groups, features, nil_features, mean, scale)
        elif prior is not None:
            raise ValueError(f"unknown prior {prior!r} (none or 'fallback')")

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b, v = theta[:d], theta[d], theta[d + 1 :]
            loss, grad = 0.0, np.zeros_like(theta)
            for g, x in zip(groups, xs, strict=True):
                z = np.append(x @ w, b + g.nil @ v)
                logp = _log_softmax(z)
                p = np.exp(logp)
                loss -= g.weight * logp[g.gold]
                err = p.copy()
                err[g.gold] -= 1.0
                err *= g.weight
                grad[:d] += x.T @ err[:-1]
                grad[d] += err[-1]
                grad[d + 1 :] += err[-1] * g.nil
            dw, dv = w - w0, v - v0
            loss = loss / total + l2 * float(dw @ dw + dv @ dv)
            grad = grad / total
            grad[:d] += 2 * l2 * dw
            grad[d + 1 :] += 2 * l2 * dv
            return loss, grad

        theta0 = np.concatenate([w0, [-2.0], v0])
        res = minimize(objective, theta0, jac=True, method="L-BFGS-B")
        theta = res.x
        return cls(
            features=list(features),
            nil_features=list(nil_features),
            mean=mean,
            scale=scale,
            weights=theta[:d],
            nil_bias=float(theta[d]),
            nil_weights=theta[d + 1 :],
            fingerprint=dict(fingerprint or {}),
        )

    def evaluate(self, groups: list[Group]) -> dict[str, float]:
        """Accuracy, mean negative log-likelihood and expected calibration error (10 bins)."""
        if not groups:
            return {"n": 0}
        correct, nll, conf = [], [], []
        for g in groups:
            logp = _log_softmax(self.logits(g.rows, g.nil))
            top = int(np.argmax(logp))
            correct.append(top == g.gold)
            conf.append(float(np.exp(logp[top])))
            nll.append(-float(logp[g.gold]))
        correct_a, conf_a = np.array(correct, dtype=float), np.array(conf)
        bins = np.minimum((conf_a * 10).astype(int), 9)
        ece = sum(
            abs(correct_a[bins == b].mean() - conf_a[bins == b].mean()) * (bins == b).mean()
            for b in range(10)
            if (bins == b).any()
        )
        return {
            "n": len(groups),
            "accuracy": round(float(correct_a.mean()), 4),
            "nll": round(float(np.mean(nll)), 4),
            "ece": round(float(ece), 4),
        }

    def fit_reasoner_weight(
        self, groups: list[Group], reasoner: list[dict[str, float]], ids: list[list[str]], restrict: list[list[str]]
    ) -> float:
        """Choose the reasoner's weight on links with reasoner answers by dev likelihood over a
        grid (0 included: a reasoner that does not help gets no weight)."""
        best, best_nll = 0.0, float("inf")
        for a in np.linspace(0.0, 3.0, 13):
            self.reasoner_weight = float(a)
            nll = 0.0
            for g, r, i, keep in zip(groups, reasoner, ids, restrict, strict=True):
                dist = self.distribution(i, g.rows, g.nil, reasoner=r, restrict=keep)
                gold = i[g.gold] if g.gold < len(i) else NIL
                nll -= np.log(dist.get(gold, 0.0) + 1e-9)
            if nll < best_nll - 1e-9:
                best, best_nll = float(a), nll
        self.reasoner_weight = best
        return best

    # -- persistence ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": self.features,
            "nil_features": self.nil_features,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "nil_bias": self.nil_bias,
            "nil_weights": self.nil_weights.tolist(),
            "reasoner_weight": self.reasoner_weight,
            "fingerprint": self.fingerprint,
            "metrics": self.metrics,
            **({"feature_definition": self.feature_definition} if self.feature_definition else {}),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        features: list[str] | tuple[str, ...],
        fingerprint: dict[str, Any] | None = None,
        definition: str | None = None,
    ) -> DecisionHead:
        """Load a head; refuse one written for other features (other names, or the same names
        computed another way: `definition`, where both the head and the caller know it), another
        KB or other embedders."""
        path = head_file(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"decision.head: no head at {path} (fit one with `retlink train CONFIG`)") from None
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"decision.head: {path} is not a readable head file: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"decision.head: {path} is not a {FORMAT} file")
        if list(data["features"]) != list(features):
            raise ConfigError(
                f"decision.head: {path} was fitted on features {data['features']}, this version computes "
                f"{list(features)}; refit it with `retlink train`"
            )
        fitted_on = data.get("feature_definition")
        if definition is not None and fitted_on is not None and fitted_on != definition:
            raise ConfigError(
                f"decision.head: {path} was fitted on features computed another way (definition {fitted_on}; "
                f"this version computes {definition}: a size, threshold or formula changed); refit it with `retlink train`"
            )
        head_fp = data.get("fingerprint") if isinstance(data.get("fingerprint"), dict) else {}
        if fingerprint is not None and head_fp != (want := _bound_to(head_fp, fingerprint)):
            diff = sorted(k for k in want if head_fp.get(k) != want[k])
            raise ConfigError(
                f"decision.head: {path} was fitted for another KB or embedder (differs in {', '.join(diff)}: "
                f"head {({k: head_fp.get(k) for k in diff})}, KB {({k: want[k] for k in diff})}); "
                "refit it with `retlink train` on this KB"
            )
        return cls(
            features=list(data["features"]),
            nil_features=list(data["nil_features"]),
            mean=np.array(data["mean"]),
            scale=np.array(data["scale"]),
            weights=np.array(data["weights"]),
            nil_bias=float(data["nil_bias"]),
            nil_weights=np.array(data["nil_weights"]),
            reasoner_weight=float(data.get("reasoner_weight", 0.0)),
            fingerprint=dict(data.get("fingerprint", {})),
            metrics=dict(data.get("metrics", {})),
            feature_definition=fitted_on,
        )
