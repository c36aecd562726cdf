"""The precomputed reference cache is keyed by what the values depend on: the model's content (not its
file dates), an adapter's base, a hub id's revision, the chat template, the tokenization settings and the code
that computes them.
Each of those changes forces a recompute; nothing else does."""

import json
import os
import shutil

import pytest
from safetensors.torch import load_file, save_file
from test_training import config_for

from alignkit.engine import fingerprint
from alignkit.train.dpo import train_dpo


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path, monkeypatch):
    """A copy of the tiny model to change, and a cache of this test's own (the session's cache may already hold
    values for the same content: the key is the content, so that would be a correct hit)."""
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def reference_pass(model, pairs_file, out, capsys, *extra) -> str:
    """ "computed" or "cached": what the run did for its reference values."""
    capsys.readouterr()
    train_dpo(
        config_for(
            model,
            pairs_file,
            out,
            "--max_steps",
            "1",
            "--eval_split",
            "0",
            "--precompute_ref_log_probs",
            "true",
            *extra,
        )
    )
    err = capsys.readouterr().err
    assert "reference log-probs of 12 examples" in err, err
    return "cached" if "read from the cache" in err else "computed"


def rewrite_weight_in_place(folder):
    """Change one weight value; keep the file's size and its modification time to the nanosecond."""
    path = folder / "model.safetensors"
    stat = path.stat()
    weights = load_file(str(path))
    name = sorted(weights)[0]
    weights[name].view(-1)[0] += 1.0
    save_file(weights, str(path), metadata={"format": "pt"})
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_each_dependency_forces_a_recompute_and_nothing_else_does(
    model_copy, pairs_file, tmp_path, capsys, monkeypatch
):
    runs = iter(range(100))

    def run(model=model_copy, *extra):
        return reference_pass(model, pairs_file, tmp_path / f"run{next(runs)}", capsys, *extra)

    assert run() == "computed"
    assert run() == "cached"
    lines = pairs_file.read_text().splitlines()  # one answer changed, as many pairs: each pair's tokens are keyed
    changed = {**json.loads(lines[-1]), "rejected": json.loads(lines[-1])["rejected"] + " Really."}
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join([*lines[:-1], json.dumps(changed)]) + "\n")
    assert reference_pass(model_copy, edited, tmp_path / "edited-run", capsys) == "computed"
    assert run(model_copy, "--beta", "0.3", "--learning_rate", "1e-4", "--seed", "7") == "cached"  # not inputs
    weights = model_copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 5 * 10**9))
    assert run() == "cached"  # touched, same content
    rewrite_weight_in_place(model_copy)  # same size, same mtime: the old size+mtime key reused stale values
    assert run() == "computed"
    assert run(model_copy, "--max_length", "72") == "computed"  # a tokenization setting (nothing is cut either way)
    config = json.loads((model_copy / "tokenizer_config.json").read_text())
    template = model_copy / "chat_template.jinja"
    if template.is_file():
        template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|> "))
    else:
        config["chat_template"] = config["chat_template"].replace("<|im_start|>", "<|im_start|> ")
        (model_copy / "tokenizer_config.json").write_text(json.dumps(config))
    assert run() == "computed"
    assert run() == "cached"
    # the code that computes the values (a fix or an upgrade): a copy of alignkit's engine with one line changed
    copies = [tmp_path / "alignkit-copy", tmp_path / "alignkit-fixed"]
    for source in copies:
        for package in fingerprint.COMPUTING_PACKAGES:
            shutil.copytree(fingerprint.Path(fingerprint.__file__).parents[1] / package, source / package)
    assert fingerprint.code_digest(copies[0]) == fingerprint.code_digest()
    with (copies[1] / "engine" / "logprobs.py").open("a") as handle:
        handle.write("# a fix\n")
    changed = fingerprint.code_digest(copies[1])
    assert changed != fingerprint.code_digest()
    monkeypatch.setattr(fingerprint, "code_digest", lambda root=None: changed)
    assert run() == "computed"


def test_an_adapters_base_is_part_of_the_key(model_copy, pairs_file, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = tmp_path / "adapter"
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_copy),
        LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False),
    )
    lora.peft_config["default"].base_model_name_or_path = str(model_copy)
    lora.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(model_copy).save_pretrained(adapter)
    assert reference_pass(adapter, pairs_file, tmp_path / "a", capsys) == "computed"
    assert reference_pass(adapter, pairs_file, tmp_path / "b", capsys) == "cached"
    rewrite_weight_in_place(model_copy)  # the adapter folder is unchanged; the model it merges onto is not
    assert reference_pass(adapter, pairs_file, tmp_path / "c", capsys) == "computed"


def test_a_hub_id_is_keyed_by_its_cached_revision(tmp_path, monkeypatch):
    snapshots = {"old": tmp_path / "snapshots" / "0a1b2c", "new": tmp_path / "snapshots" / "3d4e5f"}
    for folder in snapshots.values():
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    current = {"revision": "old"}
    monkeypatch.setattr(fingerprint, "snapshot_download", lambda name, local_files_only: snapshots[current["revision"]])
    old = fingerprint.model_fingerprint("org/model", tmp_path / "cache")
    assert old.startswith("hub:org/model@0a1b2c|")
    current["revision"] = "new"  # a new upstream commit, same file contents
    assert fingerprint.model_fingerprint("org/model", tmp_path / "cache") != old

    def not_cached(name, local_files_only):
        raise OSError("not in the local cache")

    monkeypatch.setattr(fingerprint, "snapshot_download", not_cached)
    assert fingerprint.model_fingerprint("org/model", tmp_path / "cache") == "hub:org/model"


def test_file_hashes_are_read_once_and_follow_the_content(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"abc" * 1000)
    first = fingerprint.file_digest(path, tmp_path / "cache")
    opened = []
    real_open = type(path).open
    monkeypatch.setattr(type(path), "open", lambda self, *a, **k: opened.append(self) or real_open(self, *a, **k))
    assert fingerprint.file_digest(path, tmp_path / "cache") == first and path not in opened  # from the store
    path.write_bytes(b"abd" * 1000)
    opened.clear()
    assert fingerprint.file_digest(path, tmp_path / "cache") != first and opened.count(path) == 1
