#!/usr/bin/env python3
"""A message's instructions by function, from two callgrind runs.

    bench/profile/callgrind_diff.py SMALL.out LARGE.out MESSAGES [--self] [--top N]

SMALL.out and LARGE.out are profiles of the same build draining two
backlogs (bench/profile/callgrind.sh writes them); MESSAGES is the
difference in messages between them. Each function's count in the small
run is taken from the large run's, so what start-up costs cancels out, and
the rest is divided by MESSAGES: instructions per message, inclusive of
what a function calls (or its own only, with --self), largest first.
"""
import re
import subprocess
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?)(?: \[.*\])?$")


def counts(path, inclusive):
    annotate = ["callgrind_annotate", "--auto=no", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}", path]
    text = subprocess.run(annotate, capture_output=True, text=True, check=True).stdout
    found = defaultdict(int)
    for line in text.splitlines():
        if line.startswith("-") or "=>" in line:
            continue
        m = LINE.match(line)
        if not m:
            continue
        # "file:function": the function is what names a cost across runs.
        name = m.group(2)
        function = name.split(":", 1)[1] if ":" in name and not name.startswith("???") else name
        cost = int(m.group(1).replace(",", ""))
        # A function inlined into others is listed once per file it took
        # lines from: its own costs add up, its inclusive cost is the same
        # cost each time.
        found[function] = found[function] + cost if not inclusive else max(found[function], cost)
    return found


CLIENT_BUILD = "reqwest::async_impl::client::ClientBuilder::build"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    inclusive = "--self" not in sys.argv
    top = 40
    if "--top" in sys.argv:
        top = int(sys.argv[sys.argv.index("--top") + 1])
        args.remove(str(top))
    small, large, messages = args[0], args[1], int(args[2])
    a, b = counts(small, inclusive), counts(large, inclusive)
    total = (b.get("PROGRAM TOTALS", 0) - a.get("PROGRAM TOTALS", 0)) / messages
    rows = sorted(((b[f] - a.get(f, 0)) / messages, f) for f in b if f != "PROGRAM TOTALS")
    print(f"{'per message':>12}  {'share':>6}  function ({'inclusive' if inclusive else 'self'})")
    print(f"{total:12,.0f}  100.0%  PROGRAM TOTALS (difference)")
    # An HTTP client is built once per process (it reads the CA bundle, half
    # a billion instructions): a build that falls in one run only is not a
    # message's.
    if inclusive:
        builds = b.get(CLIENT_BUILD, 0) - a.get(CLIENT_BUILD, 0)
    else:
        builds = counts(large, True).get(CLIENT_BUILD, 0) - counts(small, True).get(CLIENT_BUILD, 0)
    if builds:
        print(f"{total - builds / messages:12,.0f}          without HTTP client builds ({builds / messages:,.0f} a message)")
    for per, function in reversed(rows[-top:] if top else []):
        print(f"{per:12,.0f}  {100 * per / total:5.1f}%  {function[:160]}")


if __name__ == "__main__":
    main()
