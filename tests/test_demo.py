"""The README's demo: the shipped keyword model on the shipped recordings, offline, read back from Parquet."""

from __future__ import annotations

import io

from beam_jobs import demo


def test_demo_hears_the_spoken_keywords_and_draws_a_timeline(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 total: 4 ok" in printed and "Keywords heard" in printed
    assert (out / "timeline.png").stat().st_size > 50_000

    # Each keyword said in the recordings is heard, with the right label, within 0.5 s of when it was said;
    # anything else heard is a false alarm.
    stream = io.StringIO()
    demo.print_keywords(out, min_score=0.3, stream=stream)
    heard: dict[str, list[tuple[str, float, float]]] = {}
    current = None
    for line in stream.getvalue().splitlines():
        if not line.startswith(" "):
            current = line.rstrip(":")
        elif line.strip().startswith("heard:"):
            label, start, _, end = line.split()[1:5]
            heard.setdefault(current, []).append((label, float(start), float(end)))
    said = demo.spoken_keywords()
    def matches(k, label, start, end):
        return label == k["label"] and start - 0.5 <= k["start_s"] and k["end_s"] <= end + 0.5

    found = sum(any(matches(k, *event) for event in heard.get(name, []))
                for name, keywords in said.items() for k in keywords)
    false_alarms = sum(not any(matches(k, *event) for k in said.get(name, []))
                       for name, events in heard.items() for event in events)
    total = sum(len(k) for k in said.values())
    assert total == 10 and found == 10 and false_alarms <= 1
