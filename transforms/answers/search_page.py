"""The page a person labels search hits from: one self-contained HTML file.

Per query, its hits best first: score, file, time, a spectrogram thumbnail of
the hit with a second of context either side (PNG, inline), an audio player
for local files (the browser plays just that span), and a yes / no choice.
"Download labels.csv" writes the choices as ``uri,start_s,end_s,label`` rows,
which ``build_training_set --labels`` takes as they are (yes: the query's
label, editable at the top of its section; no: the negative label).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import urllib.parse

import numpy as np
import pyarrow as pa

import storage

PAGE_FILE = "index.html"
THUMBNAIL_RATE = 16000
CONTEXT_S = 1.0
_STFT_WINDOW, _STFT_HOP, _FFT = 400, 160, 512

_log = logging.getLogger(__name__)


def spectrogram(samples: np.ndarray) -> np.ndarray:
    """``[frequency bins, frames]`` log power (25 ms Hann windows every 10 ms at 16 kHz)."""
    if samples.size < _STFT_WINDOW:
        samples = np.pad(samples, (0, _STFT_WINDOW - samples.size))
    count = 1 + (samples.size - _STFT_WINDOW) // _STFT_HOP
    index = np.arange(_STFT_WINDOW)[None, :] + _STFT_HOP * np.arange(count)[:, None]
    power = np.abs(np.fft.rfft(samples[index] * np.hanning(_STFT_WINDOW), _FFT)) ** 2
    return np.log10(power.T + 1e-10)


def thumbnail_png(samples: np.ndarray, marks: tuple[int, int] | None = None) -> bytes:
    """A spectrogram image (8-bit palette PNG, 20 ms per column); ``marks`` (first and last STFT frame of
    the hit) are drawn as white lines."""
    from matplotlib import colormaps
    from PIL import Image

    image = spectrogram(samples)
    columns = image.shape[1] // 2 * 2
    image = image[:, :columns].reshape(image.shape[0], -1, 2).mean(axis=2) if columns else image
    image = image[: image.shape[0] // 2 * 2].reshape(-1, 2, image.shape[1]).mean(axis=1)  # 128 rows
    low, high = np.percentile(image, [5, 99.5])
    pixels = np.round(np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 254).astype(np.uint8)
    for column in marks or ():
        if 0 <= column // 2 < pixels.shape[1]:
            pixels[:, column // 2] = 255
    palette = (colormaps["magma"](np.linspace(0, 1, 255))[:, :3] * 255).astype(np.uint8).tolist()
    picture = Image.fromarray(pixels[::-1], mode="P")  # low frequencies at the bottom
    picture.putpalette([value for colour in palette for value in colour] + [255, 255, 255])
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def hit_thumbnail(uri: str, start_s: float, end_s: float) -> str | None:
    """The base64 PNG of a hit with context, or None when its audio cannot be read."""
    from transforms.decoding.span import load_audio_span

    begin = max(0.0, start_s - CONTEXT_S)
    try:
        span = load_audio_span(uri, THUMBNAIL_RATE, begin, end_s + CONTEXT_S)
    except Exception as e:  # noqa: BLE001 - a moved or unreadable file costs its picture only
        _log.warning("no thumbnail for %s: %s", uri, e)
        return None
    marks = tuple(int(round((t - begin) * THUMBNAIL_RATE / _STFT_HOP)) for t in (start_s, end_s))
    return base64.b64encode(thumbnail_png(span.samples, marks)).decode()


def _audio_src(uri: str, start_s: float, end_s: float) -> str | None:
    if storage.is_remote(uri) or storage.split_member_uri(uri):  # a browser plays no member or table row
        return None
    path = urllib.parse.quote(storage.local_path(uri))
    return f"file://{path}#t={max(0.0, start_s - CONTEXT_S):.2f},{end_s + CONTEXT_S:.2f}"


def _stem(query: str) -> str:
    name = query.rsplit("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}
td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left;font-size:14px}
td.num{text-align:right;font-variant-numeric:tabular-nums}img{display:block;height:64px}
tr.yes{background:#e6f6e6}tr.no{background:#fbe9e9}section{margin-bottom:2.5em}
"""

_SCRIPT = """
function mark(select){select.closest('tr').className=select.value;}
function csvField(v){return /[",\\n]/.test(v)?'"'+v.replace(/"/g,'""')+'"':v;}
function labelsCsv(marks,negative){
  const rows=['uri,start_s,end_s,label'];
  for(const m of marks){
    const label=m.mark==='yes'?m.label:(m.mark==='no'?negative:'');
    if(label)rows.push([csvField(m.uri),m.start,m.end,csvField(label)].join(','));
  }
  return rows.join('\\n')+'\\n';
}
function download(){
  const marks=[];
  document.querySelectorAll('section').forEach(s=>{
    const label=s.querySelector('input.label').value.trim();
    s.querySelectorAll('tr[data-uri]').forEach(r=>marks.push({uri:r.dataset.uri,start:r.dataset.start,
      end:r.dataset.end,mark:r.querySelector('select').value,label:label}));
  });
  const negative=document.getElementById('negative').value.trim()||'_negative_';
  const a=document.createElement('a');
  a.href=URL.createObjectURL(new Blob([labelsCsv(marks,negative)],{type:'text/csv'}));
  a.download='labels.csv';a.click();
}
"""


def render_page(hits: pa.Table, thumbnails: bool = True, title: str = "Search hits") -> str:
    """The whole page for a hits table (``schemas.answers.hits_schema``)."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
             f"<h1>{esc(title)}</h1>",
             "<p>Mark hits yes or no, then <button onclick='download()'>Download labels.csv</button> "
             "(rows uri,start_s,end_s,label for <code>build_training_set --labels</code>). "
             "Label of the no's: <input id='negative' value='_negative_' size='12'></p>"]
    rows = hits.to_pylist()
    for query in dict.fromkeys(r["query"] for r in rows):
        found = [r for r in rows if r["query"] == query]
        parts.append(f"<section><h2>{esc(query)}</h2><p>label of the yes's: "
                     f"<input class='label' value='{esc(_stem(query), quote=True)}'> ({len(found)} hits)</p>")
        parts.append("<table><tr><th>#</th><th>score</th><th>file</th><th>time (s)</th><th>spectrogram"
                     "</th><th>listen</th><th>match?</th></tr>")
        for r in found:
            uri, start, end = r["uri"], r["start_s"], r["end_s"]
            picture = hit_thumbnail(uri, start, end) if thumbnails else None
            image = f"<img alt='' src='data:image/png;base64,{picture}'>" if picture else ""
            src = _audio_src(uri, start, end)
            player = f"<audio controls preload='none' src='{esc(src, quote=True)}'></audio>" if src else ""
            name = uri.rstrip("/").rsplit("/", 1)[-1]
            parts.append(
                f"<tr data-uri='{esc(uri, quote=True)}' data-start='{start:.3f}' data-end='{end:.3f}'>"
                f"<td class='num'>{r['rank']}</td><td class='num'>{r['score']:.3f}</td>"
                f"<td title='{esc(uri, quote=True)}'>{esc(name)}</td>"
                f"<td class='num'>{start:.2f}&ndash;{end:.2f}</td><td>{image}</td><td>{player}</td>"
                "<td><select onchange='mark(this)'><option value=''>&ndash;</option>"
                "<option value='yes'>yes</option><option value='no'>no</option></select></td></tr>")
        parts.append("</table></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_page(output: str, hits: pa.Table, thumbnails: bool = True, title: str = "Search hits") -> str:
    path = storage.join(output, PAGE_FILE)
    storage.write_text(path, render_page(hits, thumbnails, title), mime_type="text/html")
    return path
