#!/usr/bin/env python3
"""Turn bench-report.sh's results (JSON lines) into docs/benchmarks.json,
an SVG bar chart per route and docs/benchmarks.md. No network, no plotting
library: the SVG is written by hand from the numbers."""
import datetime, json, os, platform, subprocess, sys

results, out = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(results) if l.strip()]

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"

machine = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
    "cores": os.cpu_count(),
    "memory": sh("free -h | awk '/Mem:/{print $2}'"),
    "kernel": platform.release(),
    "disk": sh("df -h --output=source,fstype '%s' | tail -1" % os.environ.get("BENCH_DIR", ".")),
    "load": sh("cat /proc/loadavg"),
}
json.dump({"machine": machine, "results": rows}, open(os.path.join(out, "benchmarks.json"), "w"), indent=1)

def fmt_rate(r):
    if r["unit"] == "B/s":
        return "%.0f MB/s" % (r["rate"] / 1e6)
    return "%.0f files/s" % r["rate"]

# One SVG: a group of horizontal bars per route, each bar scaled to the
# fastest entry of its route.
routes = []
for r in rows:
    if r["route"] not in routes:
        routes.append(r["route"])
bar_h, gap, label_w, bar_w = 18, 6, 330, 360
y = 30
parts = []
for route in routes:
    rs = [r for r in rows if r["route"] == route]
    top = max(r["rate"] for r in rs) or 1
    parts.append('<text x="4" y="%d" font-weight="bold">%s</text>' % (y, route))
    y += gap + 4
    for r in rs:
        w = max(1, int(bar_w * r["rate"] / top))
        color = "#2a7ab0" if "image-creator" in r["name"] else "#999"
        parts.append('<text x="8" y="%d">%s</text>' % (y + 13, r["name"].replace("&", "&amp;")))
        parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>' % (label_w, y, w, bar_h, color))
        parts.append('<text x="%d" y="%d">%s</text>' % (label_w + w + 4, y + 13, fmt_rate(r)))
        y += bar_h + gap
    y += 14
svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">'
       '<text x="4" y="16">Throughput per route (longer is faster; blue: image-creator)</text>%s</svg>\n'
       % (label_w + bar_w + 120, y, "".join(parts)))
open(os.path.join(out, "benchmarks.svg"), "w").write(svg)

lines = [
    "# Benchmarks",
    "",
    "Written by `scripts/bench-report.sh` (raw figures: [benchmarks.json](benchmarks.json)).",
    "One run on one machine: absolute numbers move with the machine and its",
    "load; **the ratios measured within one run are the figures that matter.**",
    "",
    "Machine: %s, %s cores, %s RAM, kernel %s; scratch on `%s`; load %s; %s."
    % (machine["cpu"], machine["cores"], machine["memory"], machine["kernel"],
       machine["disk"], machine["load"], machine["date"]),
    "",
    "![throughput per route](benchmarks.svg)",
    "",
    "| route | tool | seconds | rate | peak RSS (MiB) |",
    "|---|---|---:|---:|---:|",
]
for r in rows:
    name = r["name"].replace("|", "\\|")
    lines.append("| %s | %s | %.2f | %s | %.0f |" % (r["route"], name, r["seconds"], fmt_rate(r), r["peak_rss_mib"]))
lines.append("")
notes = os.path.join(out, "benchmarks-notes.md")
if os.path.exists(notes):
    lines.append(open(notes).read())
open(os.path.join(out, "benchmarks.md"), "w").write("\n".join(lines) + "\n")
print("wrote %s/benchmarks.{md,json,svg}" % out)
