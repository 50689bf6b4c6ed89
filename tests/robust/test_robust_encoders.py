"""Adversarial fine-tuning of the image embedder (`retlink train`, `kind: encoder`), with real
parts: a randomly initialised EfficientNet-Lite0 (no weights download) trained by each objective
on a few demo images at 32x32, PGD made on the network itself before and after, real chromadb KBs
and the real attack library. The robustness gains are measured here, not built in."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from retlink.core.errors import ConfigError, KBError
from retlink.tools.vision.weights import build_tuned, read_weights, save_weights, weights_sha256
from retlink.train.encoder import load_batch, load_encoder_config, train_encoder, training_items
from tests.robust.helpers import SIZE, fooled_retrieval, make_benchmark, random_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    # two threads on two shared cores run this small network ~10x slower than one (measured)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    return make_benchmark(root / "data"), random_checkpoint(root / "random.pt")


def _config(data, base, out, objective: str, **extra) -> dict:
    return {
        "kind": "encoder", "objective": objective, "base": str(base), "out": str(out),
        "dataset": {"key": "logos", "root": str(data)}, "eps": "8/255", "steps": 2, "batch_size": 6,
        "lr": 3e-4, "image_size": SIZE, "train_last_blocks": None, "seed": 0, **extra,
    }


def test_fare_makes_a_tiny_network_fooled_less_often(bench, tmp_path):
    data, base = bench
    cfg = _config(data, base, tmp_path / "fare.pt", "fare", epochs=15, lr=1e-4, batch_size=4)
    items = training_items(load_encoder_config(cfg))
    assert len(items) == 12 and all(gold is None for _, gold in items)  # the KB's images, unlabelled
    x = load_batch([p for p, _ in items], SIZE)
    gold = torch.arange(len(x))
    before = fooled_retrieval(build_tuned(base), x, x, gold, 4 / 255)
    done = train_encoder(cfg, progress=False)
    after = fooled_retrieval(build_tuned(done["path"]), x, x, gold, 4 / 255)
    assert before >= 0.5, before  # the attack works on the random network
    assert after < before, (before, after)
    assert done["last_loss"] < done["first_loss"]


@pytest.mark.slow  # 8 epochs of MAT (21 s under load); the fast set keeps FARE's training test (the same loop)
def test_mat_makes_a_tiny_network_fooled_less_often(bench, tmp_path):
    data, base = bench
    cfg = _config(data, base, tmp_path / "mat.pt", "mat", split="train", epochs=8, views=1)
    items = training_items(load_encoder_config(cfg))
    assert len(items) == 12 and all(gold is not None for _, gold in items)
    queries = load_batch([p for p, _ in items], SIZE)
    keys = load_batch([g for _, g in items], SIZE)
    gold = torch.arange(len(items))
    before = fooled_retrieval(build_tuned(base), queries, keys, gold, 4 / 255)
    done = train_encoder(cfg, progress=False)
    after = fooled_retrieval(build_tuned(done["path"]), queries, keys, gold, 4 / 255)
    assert before >= 0.5, before
    assert after < before, (before, after)


def test_checkpoint_round_trip_carries_its_fingerprint(bench, tmp_path):
    data, base = bench
    cfg = _config(data, base, tmp_path / "w.pt", "fare", max_steps=1)
    done = train_encoder(cfg, progress=False)
    payload = read_weights(done["path"])
    fp = payload["fingerprint"]
    assert payload["network"] == "efficientnet_lite0" and payload["weights_sha256"] == done["weights_sha256"]
    assert fp["objective"] == "fare" and fp["eps"] == pytest.approx(8 / 255) and fp["steps"] == 2
    assert fp["base"] == read_weights(base)["weights_sha256"] and len(fp["data_sha256"]) == 64
    assert weights_sha256(payload["state_dict"]) == done["weights_sha256"]
    model = build_tuned(done["path"])
    again = tmp_path / "again.pt"
    assert save_weights(again, model, fp) == done["weights_sha256"]  # reload and save: the same weights
    x = torch.rand(2, 3, SIZE, SIZE)
    assert torch.equal(model.features(x), build_tuned(again).features(x))
    # other data, another fingerprint; the weights hash guards the tensors
    other = train_encoder({**cfg, "out": str(tmp_path / "o.pt"), "limit": 6}, progress=False)
    assert other["fingerprint"]["data_sha256"] != fp["data_sha256"]
    payload["state_dict"][next(iter(payload["state_dict"]))] += 1
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ConfigError, match="do not match the hash"):
        read_weights(tmp_path / "edited.pt")
    with pytest.raises(ConfigError, match="fine-tuned from efficientnet_lite0, not efficientnet_lite1"):
        build_tuned(done["path"], expect_network="lite1")


def test_an_interrupted_run_leaves_the_previous_checkpoint(bench, tmp_path, monkeypatch):
    from retlink.train import robust_loop

    data, base = bench
    out = tmp_path / "w.pt"
    cfg = _config(data, base, out, "fare", max_steps=1)
    first = train_encoder(cfg, progress=False)["weights_sha256"]
    calls = []

    def interrupted(*args, **kwargs):  # injected fault: Ctrl-C during the second update
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = robust_loop.fare_step
    monkeypatch.setattr(robust_loop, "fare_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_encoder({**cfg, "max_steps": 3, "seed": 1}, progress=False)
    assert read_weights(out)["weights_sha256"] == first
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]  # no temporary file left behind


def test_encoder_config_errors_name_the_key(bench, tmp_path):
    data, base = bench
    good = _config(data, base, tmp_path / "w.pt", "mat", split="train")
    with pytest.raises(ConfigError, match="split: MAT trains"):
        load_encoder_config({**good, "split": None})
    with pytest.raises(ConfigError, match="train on train or dev"):
        load_encoder_config({**good, "split": "test"})
    with pytest.raises(ConfigError, match="stepz"):
        load_encoder_config({**good, "stepz": 3})
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_encoder_config({**good, "dataset": {"key": "nope"}})
    path = tmp_path / "train.yaml"  # paths relative to the file; the kind dispatches
    path.write_text(yaml.safe_dump({**good, "out": "w.pt", "base": "random.pt"}))
    from retlink.train import config_kind

    assert config_kind(path) == "encoder" and load_encoder_config(path).out == tmp_path / "w.pt"


def _kb(tmp_path, data, weights, name: str):
    from retlink.tools.kb.build import build_kb
    from retlink.tools.kb.embedders import EfficientNetImageEmbedder, shared_text_embedder

    image = EfficientNetImageEmbedder(network="lite0", weights=str(weights))
    build_kb(data / "entities.jsonl", tmp_path / name, shared_text_embedder(), image)
    return image


def test_a_kb_embedded_with_other_weights_is_refused(bench, tmp_path):
    from retlink.tools.kb.embedders import EfficientNetImageEmbedder, shared_text_embedder
    from retlink.tools.kb.store import KBStore
    from retlink.tools.vision.weights import short_id

    data, base = bench
    tuned = train_encoder(_config(data, base, tmp_path / "tuned.pt", "fare", max_steps=1), progress=False)
    image = _kb(tmp_path, data, tuned["path"], "kb")
    store = KBStore(tmp_path / "kb", shared_text_embedder(), image)  # the same weights: opens
    assert store.manifest["image_model"] == f"efficientnet@{short_id(tuned['weights_sha256'])}"
    assert store.manifest["image_weights"]["fingerprint"]["objective"] == "fare"
    assert store.manifest["image_weights"]["weights_sha256"] == tuned["weights_sha256"]
    other = EfficientNetImageEmbedder(network="lite0", weights=str(base))
    with pytest.raises(KBError, match=r"embedded with fine-tuned weights .* config loads fine-tuned weights"):
        KBStore(tmp_path / "kb", shared_text_embedder(), other)
    with pytest.raises(ConfigError, match=r"fine-tuned from efficientnet_lite0, but embedder\.image_backend is efficientnet_lite1"):
        EfficientNetImageEmbedder(network="lite1", weights=str(base))


def test_the_certified_pipelines_deep_feature_runs_the_kbs_tuned_weights(bench, tmp_path):
    from retlink.attacks.spec import AttackSpec
    from retlink.eval.certified import CertifiedConfig, CertifiedLinker
    from retlink.eval.config import PipelineSpec
    from retlink.eval.pipelines import attack_encoder, is_transfer, pipeline_image_encoder

    data, base = bench
    tuned = train_encoder(_config(data, base, tmp_path / "tuned.pt", "fare", max_steps=1), progress=False)
    _kb(tmp_path, data, tuned["path"], "kb")
    options = {"deep": True, "image_weights": tuned["path"]}
    linker = CertifiedLinker.from_kb(tmp_path / "kb", CertifiedConfig.model_validate(options))
    assert linker.kb.image_embedder.weights_info["weights_sha256"] == tuned["weights_sha256"]
    with pytest.raises(KBError, match="embedded with fine-tuned weights"):
        CertifiedLinker.from_kb(tmp_path / "kb", CertifiedConfig.model_validate({**options, "image_weights": base}))
    # white box only when the attack is made on the deep feature's own weights
    pipe = PipelineSpec(name="c", kind="certified", options=options)
    own = AttackSpec(name="pgd-own", attack="pgd", surrogate="lite0", pretrained=tuned["path"])
    assert not is_transfer(pipeline_image_encoder(pipe), attack_encoder(own))
    assert is_transfer(pipeline_image_encoder(pipe), attack_encoder(AttackSpec(name="pgd", attack="pgd")))
    # without the deep feature no image network decides: nothing to be white box against
    assert pipeline_image_encoder(PipelineSpec(name="t", kind="certified", options={"image_weights": tuned["path"]})) is None


@pytest.mark.slow  # loads the packaged Lite0 weights (the KB's side) beside the tuned ones
def test_a_kb_embedded_with_the_packaged_weights_is_refused_with_tuned_ones(bench, tmp_path, demo_kb_path):
    from retlink.tools.kb.embedders import EfficientNetImageEmbedder, shared_text_embedder
    from retlink.tools.kb.store import KBStore

    _, base = bench
    with pytest.raises(KBError, match="embedded with the packaged weights and the config loads fine-tuned weights"):
        KBStore(demo_kb_path, shared_text_embedder(), EfficientNetImageEmbedder(network="lite0", weights=str(base)))


def test_an_attack_on_the_pipelines_own_checkpoint_runs_white_box(bench, tmp_path):
    from retlink.attacks import ATTACKS
    from retlink.attacks.attacked import surrogate
    from retlink.attacks.spec import AttackSpec
    from retlink.attacks.targets import EmbeddingAwayTarget
    from retlink.eval.config import PipelineSpec
    from retlink.eval.pipelines import attack_encoder, is_transfer, pipeline_image_encoder

    data, base = bench
    tuned = train_encoder(_config(data, base, tmp_path / "tuned.pt", "fare", max_steps=1), progress=False)
    own = AttackSpec(name="pgd-own", attack="pgd", params={"eps": "8/255", "steps": 3}, surrogate="lite0", pretrained=tuned["path"])
    model = surrogate(own.surrogate, own.pretrained)
    assert model.weights_sha256 == tuned["weights_sha256"]
    x = load_batch([p for p, _ in training_items(load_encoder_config(_config(data, base, tmp_path / "x.pt", "fare")))][:2], SIZE)
    attack = ATTACKS["pgd"](EmbeddingAwayTarget(model), **own.image_params())
    adv = attack(x)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        moved = 1 - torch.nn.functional.cosine_similarity(model.features(adv), model.features(x))
    assert float(moved.min()) > 0  # the attack moved the tuned encoder's own features
    # the report's white-box / transfer label: made on the pipeline's image weights or not
    pipe = PipelineSpec(name="a", kind="agent", overrides={"embedder": {"image_weights": tuned["path"]}})
    packaged = AttackSpec(name="pgd", attack="pgd")
    other = AttackSpec(name="pgd-base", attack="pgd", surrogate="lite0", pretrained=base)
    assert not is_transfer(pipeline_image_encoder(pipe), attack_encoder(own))
    assert is_transfer(pipeline_image_encoder(pipe), attack_encoder(packaged))
    assert is_transfer(pipeline_image_encoder(pipe), attack_encoder(other))
    assert not is_transfer(pipeline_image_encoder(PipelineSpec(name="b", kind="agent")), attack_encoder(packaged))
    with pytest.raises(ConfigError, match="fine-tuned from efficientnet_lite0, not efficientnet_lite1"):
        surrogate("lite1", tuned["path"])


def test_retlink_train_runs_an_encoder_config(bench, tmp_path):
    from typer.testing import CliRunner

    from retlink.cli import app

    data, base = bench
    path = tmp_path / "fare.yaml"
    path.write_text(yaml.safe_dump({**_config(data, base, "w.pt", "fare", max_steps=1), "base": str(base)}))
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 0, result.output
    assert "image_weights: " in result.output and read_weights(tmp_path / "w.pt")["fingerprint"]["objective"] == "fare"
    refused = CliRunner().invoke(app, ["train", str(path), "--limit", "3"])
    assert refused.exit_code != 0 and "--limit is for the decision head" in refused.output


def test_the_probe_compares_original_and_tuned_weights_paired(bench, tmp_path):
    from retlink.eval.experiments.robust_encoder_probe import compare

    data, base = bench
    items = training_items(load_encoder_config(_config(data, base, tmp_path / "x.pt", "mat", split="train")))
    kb = list(load_batch([g for _, g in items], SIZE))
    x, y = load_batch([p for p, _ in items][:4], SIZE), torch.arange(4)
    tuned = train_encoder(_config(data, base, tmp_path / "t.pt", "fare", max_steps=1), progress=False)
    report = compare({"original": build_tuned(base), "tuned": build_tuned(tuned["path"])}, kb, (x, y), eps_list=[8 / 255], steps=2)
    assert report["n_test"] == 4 and report["n_kb"] == 12
    for key in ("original_clean", "tuned_clean", "original_pgd-8", "tuned_pgd-8", "diff_tuned_clean", "diff_tuned_pgd-8"):
        value, lo, hi = report[key]
        assert lo <= value <= hi
    # white box: the attack on each network never raises its own Hits@1 above clean
    assert report["original_pgd-8"][0] <= report["original_clean"][0]


@pytest.mark.slow  # builds the demo KB twice (packaged and tuned weights) and attacks 2 photos at 224 px
def test_the_eval_report_labels_attacks_on_other_weights_as_transfer(bench, tmp_path, demo_kb_path):
    from retlink.eval.config import load_eval_config
    from retlink.eval.report import write_report
    from retlink.eval.runner import Runner
    from tests.conftest import DEMO

    _, base = bench  # the pipeline's own image weights: a random Lite0 checkpoint
    cfg = load_eval_config({
        "name": "robust",
        "dataset": {"key": "demo", "split": "test", "limit": 2},
        "kb": {"path": str(demo_kb_path)},
        "pipelines": [{
            "name": "tuned-retrieval", "kind": "retrieval",
            "overrides": {"embedder": {"image_weights": str(base)}},
            "kb": {"path": str(tmp_path / "kb-tuned"), "entities": str(DEMO / "entities.jsonl")},
        }],
        "attacks": [
            {"name": "pgd-own", "attack": "pgd", "params": {"eps": "8/255", "steps": 2}, "surrogate": "lite0", "pretrained": str(base)},
            {"name": "pgd-packaged", "attack": "pgd", "params": {"eps": "8/255", "steps": 2}},
            {"name": "fgsm-packaged", "attack": "fgsm", "params": {"eps": "8/255"}},
        ],
        "settings": ["it2t", {"name": "packaged-only", "setting": "it2t", "attacks": ["pgd-packaged", "fgsm-packaged"]}],
        "output_dir": str(tmp_path / "runs"),
    })
    runner = Runner(cfg)
    runner.run(progress=False)
    assert runner.pipeline("tuned-retrieval").kb.manifest["image_weights"]["weights_sha256"] == read_weights(base)["weights_sha256"]
    summary = write_report(runner.dir, plots=False)
    row = summary["settings"]["it2t"]["pipelines"]["tuned-retrieval"]
    assert not row["pgd-own"].get("transfer") and row["pgd-packaged"]["transfer"] is True
    assert not row["worst case"].get("transfer")  # it takes the white-box attack too
    only = summary["settings"]["packaged-only"]["pipelines"]["tuned-retrieval"]["worst case"]
    assert only["attacks"] == ["pgd-packaged", "fgsm-packaged"] and only["transfer"] is True
    assert summary["attacks"]["pgd-own"]["made_on"].startswith("efficientnet_lite0@")
    report = (runner.dir / "report.md").read_text()
    assert "*transfer*" in report


def test_a_checkpoint_rewritten_in_place_is_loaded_again(tmp_path):
    from retlink.tools.kb.embedders import shared_image_embedder

    path = random_checkpoint(tmp_path / "w.pt", seed=0)
    first = shared_image_embedder("lite0", weights=path)
    assert shared_image_embedder("lite0", weights=path) is first  # shared while the file is unchanged
    random_checkpoint(path, seed=1)  # retrained to the same path
    second = shared_image_embedder("lite0", weights=path)
    assert second.name != first.name and second.name.startswith("efficientnet@")


def test_retrained_weights_at_the_same_path_are_another_experiment(tmp_path):
    from retlink.eval.config import load_eval_config

    weights = random_checkpoint(tmp_path / "w.pt", seed=0)
    cfg = {
        "name": "fp", "dataset": {"key": "demo", "split": "test"}, "kb": {"path": str(tmp_path / "kb")},
        "pipelines": [{"name": "r", "kind": "retrieval", "overrides": {"embedder": {"image_weights": str(weights)}},
                       "kb": {"path": str(tmp_path / "kb-w")}}],
        "attacks": [{"name": "p", "attack": "pgd", "surrogate": "lite0", "pretrained": str(weights)}],
    }
    before = load_eval_config(cfg).fingerprint()
    assert load_eval_config(cfg).fingerprint() == before
    random_checkpoint(weights, seed=1)
    assert load_eval_config(cfg).fingerprint() != before  # a resumed run refuses to mix the two


@pytest.mark.slow  # builds the demo KB twice (packaged and tuned weights) and links 3 demo samples each
def test_a_head_fitted_on_tuned_weights_is_bound_to_the_kb_they_embedded(bench, tmp_path, demo_kb_path):
    """Item 4 of issue 29: a head refitted on a pipeline whose image embedder uses fine-tuned
    weights (and a KB embedded with them) is bound to that KB and written beside it, not to the
    run's KB; a head fitted across both KBs is refused."""
    from retlink import Linker
    from retlink.tools.vision.weights import short_id
    from retlink.train import train
    from tests.conftest import DEMO

    _, base = bench
    tuned_kb = tmp_path / "kb-tuned"
    agent = {"reasoner": {"enabled": False}, "decision": {"head": None}}
    ecfg = {
        "name": "tuned-links",
        "dataset": {"key": "demo", "split": "test", "limit": 3},
        "kb": {"path": str(demo_kb_path)},
        "pipelines": [
            {"name": "packaged", "kind": "agent", "overrides": agent},
            {"name": "tuned", "kind": "agent", "overrides": {**agent, "embedder": {"image_weights": str(base)}},
             "kb": {"path": str(tuned_kb), "entities": str(DEMO / "entities.jsonl")}},
        ],
        "output_dir": str(tmp_path / "runs"),
    }
    with pytest.raises(ConfigError, match="KBs differ"):
        train({"name": "both", "pipelines": ["packaged", "tuned"], "folds": 2, "eval": ecfg})
    path, head = train({"name": "t", "pipelines": ["tuned"], "folds": 2, "eval": ecfg})
    assert path == tmp_path / "kb-tuned.t.head.json"  # beside the pipeline's KB, not the run's
    assert head.fingerprint["image_model"] == f"efficientnet@{short_id(read_weights(base)['weights_sha256'])}"
    assert json.loads(path.read_text())["fingerprint"] == head.fingerprint
    linker = Linker.from_config({"kb": {"path": str(tuned_kb)}, "reasoner": {"enabled": False},
                                 "embedder": {"image_weights": str(base)}, "decision": {"head": str(path)}})
    result = linker.link(DEMO / "images" / "moon.jpg", "Luna", "Through the telescope the craters of [Luna] look sharp and grey tonight.")
    assert result.decided_by == "head"
    with pytest.raises(ConfigError, match="another KB or embedder"):  # the packaged KB: refused
        Linker.from_config({"kb": {"path": str(demo_kb_path)}, "reasoner": {"enabled": False}, "decision": {"head": str(path)}})
