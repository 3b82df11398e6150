"""The worker's model cache: a second job on the same model does not reload it."""

import ray

from runtime.model_cache import ModelCache


def test_cache_keys_on_path_dtype_device():
    cache = ModelCache()
    loads = []
    first, hit = cache.get_or_load("/m", "float32", "cpu", lambda: loads.append(1) or object())
    again, hit_again = cache.get_or_load("/m", "float32", "cpu", lambda: loads.append(1) or object())
    other, _ = cache.get_or_load("/m", "float16", "cpu", lambda: loads.append(1) or object())
    assert (hit, hit_again) == (False, True)
    assert first is again and other is not first
    assert len(loads) == 2 and (cache.hits, cache.misses) == (1, 2)
    assert cache.evict("/m") == 2 and not cache.entries


def _pipeline_identity(worker, path):
    pipe, _ = worker.load_pipeline(path, "float32")
    return id(pipe.unet)


def test_worker_reuses_loaded_pipeline(pool2, builtin_image_dir):
    worker = pool2.workers[1]
    first = ray.get(worker.preload.remote(str(builtin_image_dir), "float32"))
    second = ray.get(worker.preload.remote(str(builtin_image_dir), "float32"))
    assert first["cache_hit"] is False and second["cache_hit"] is True
    ids = ray.get([worker.execute.remote(_pipeline_identity, str(builtin_image_dir)) for _ in range(2)])
    assert ids[0] == ids[1]
    stats = ray.get(worker.cache_stats.remote())
    assert stats["misses"] == 1 and stats["hits"] >= 3
