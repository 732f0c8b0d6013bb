"""The artifact cache: objects by content, recipes found again, and what each object was made with."""
import json

import torch

from harness.cache import ArtifactCache


def test_a_recipe_records_what_its_object_was_made_with(tmp_path):
    cache = ArtifactCache(tmp_path)
    sha = cache.put_bytes(b"weights")
    cache.remember({"what": "pretrain", "seed": 0}, sha)
    assert cache.lookup({"what": "pretrain", "seed": 0}) == sha and cache.lookup({"what": "pretrain"}) is None
    [entry] = cache.made(sha)
    assert entry["recipe"] == {"what": "pretrain", "seed": 0}
    made = entry["made"]
    assert made["torch"] == torch.__version__ and made["threads"] == torch.get_num_threads()
    assert made["machine"] and made["python"] and made["at"].endswith("Z")
    assert cache.made(cache.put_bytes(b"a user's file")) == []  # no recipe made it


def test_every_recipe_that_made_an_object_is_listed_and_old_records_still_read(tmp_path):
    cache = ArtifactCache(tmp_path)
    sha = cache.put_bytes(b"dataset")
    cache.remember({"version": 2}, sha)
    old = tmp_path / "recipes" / "old.json"  # written before recipes said what made them
    old.write_text(json.dumps({"recipe": {"version": 1}, "sha256": sha}))
    (tmp_path / "recipes" / "broken.json").write_text("{")
    assert [e["recipe"] for e in cache.made(sha)] == [{"version": 1}, {"version": 2}]
    assert cache.made(sha)[0]["made"] is None
