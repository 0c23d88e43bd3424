"""caanet.render.dataset_page: the cache summary page."""

from __future__ import annotations

import base64
import re

import pytest

from caanet.errors import CacheError
from caanet.features import cache_summary
from caanet.render.dataset_page import parallel_key, pick_examples, render_dataset_page


def test_parallel_key():
    assert parallel_key("audio/airport-barcelona-0-0-b.wav", "b") == "airport-barcelona-0-0"
    assert parallel_key("audio/airport-barcelona-0-0-b.wav", "a") is None
    assert parallel_key("audio/b.wav", "b") is None


def test_pick_examples_prefers_parallel_recordings_spread_over_scenes():
    names = ["audio/bus-x-0-0-a.wav", "audio/bus-x-0-1-a.wav", "audio/bus-x-0-0-b.wav", "audio/bus-x-0-0-c.wav",
             "audio/park-y-1-0-a.wav", "audio/park-y-1-0-b.wav", "audio/park-y-1-0-c.wav", "audio/park-y-1-1-a.wav"]
    devices = ["a", "a", "b", "c", "a", "b", "c", "a"]
    scenes = ["bus"] * 4 + ["park"] * 4
    rows = pick_examples(names, devices, scenes, ["a", "b", "c"], per_device=2)
    assert rows == [{"a": 0, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]
    rows = pick_examples(names, devices, scenes, ["a", "b", "c"], per_device=3)
    assert rows[2:] == [{"a": 1}]  # no third parallel recording: device a's own clip fills in


def test_pick_examples_without_parallel_recordings():
    rows = pick_examples(["audio/s1.wav", "audio/s2.wav", "audio/s3.wav"], ["a", "b", "a"], ["x", "x", "y"],
                         ["a", "b"], per_device=1)
    assert rows == [{"a": 0}, {"b": 1}]


def test_render_dataset_page(tiny_cache, tmp_path):
    out = tmp_path / "pages" / "tiny.html"
    summary = render_dataset_page(tiny_cache, out, title="Tiny <dataset>", examples_per_device=2)
    html = out.read_text()
    s = cache_summary(tiny_cache)
    assert summary["n_clips"] == s["n_clips"]
    assert "<title>Tiny &lt;dataset&gt;</title>" in html  # escaped
    assert f'<strong id="n-clips">{s["n_clips"]}</strong>' in html
    # every device x scene count and the totals appear in the table
    table = html[html.index('id="device-scene"'):html.index("</table>", html.index('id="device-scene"'))]
    for scene in s["scene_labels"]:
        row = re.search(rf"<td class=\"label\">{scene}</td>(.*?)</tr>", table).group(1)
        cells = [int(v) for v in re.findall(r"<td>(\d+)</td>", row)]
        assert cells == [s["device_scene"][d][scene] for d in s["device_labels"]] + [s["by_scene"][scene]]
    assert re.search(r'<td class="label">train</td>' + "".join(
        rf"<td>{s['device_split'][d]['train']}</td>" for d in s["device_labels"]), html)
    assert "32 &times; 16" in html and "hamming" in html
    assert "0 clip(s) zero-padded and 0 clip(s) cropped" in html
    png = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html).group(1)
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "same recording made by several devices" in html
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.html"]  # no temporary left


def test_render_dataset_page_opens_the_cache_once(tiny_cache, tmp_path, monkeypatch):
    import caanet.features

    opened = []
    real = caanet.features.open_hdf5
    monkeypatch.setattr(caanet.features, "open_hdf5", lambda path, mode="r", **kw: opened.append(mode) or real(path, mode, **kw))
    render_dataset_page(tiny_cache, tmp_path / "x.html", title="x")
    assert opened == ["r"]


def test_render_dataset_page_needs_a_valid_cache(tmp_path):
    with pytest.raises(CacheError, match="missing.h5"):
        render_dataset_page(tmp_path / "missing.h5", tmp_path / "x.html", title="x")
    assert not (tmp_path / "x.html").exists()
