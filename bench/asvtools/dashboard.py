"""`make dashboard` (`python -m bench.asvtools.dashboard`): asv's dashboard, built so that it opens with no network.

asv's page loads jQuery, flot, stupidtable, blueimp-md5 and bootstrap from public CDNs;
on a machine without internet it shows only its error page. After `asv publish`, every
such address is replaced by a copy of the same release committed under
third_party/asv-www/ (licences beside each), with an integrity attribute computed from
that copy. Where the copy is byte-identical to what asv pins, the hash is asv's own; the
flot files are flot 0.8.3's unminified release where asv names cdnjs's minified build.
An address asv adds that has no copy here stops the build, naming it, so that a page
that would reach the network is never published as offline.

Copies are committed rather than fetched at build time because the dashboard is built on
benchmark machines, which are often offline, and stupidtable 1.0.1 is not on npm at all.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from bench.asvtools import page_fixes, publish_input, scratch, triage_page
from bench.harness import cli, environment

VENDOR_SOURCE = environment.REPO / "third_party" / "asv-www"
VENDOR_DIR = "vendor"  # under the html folder

# What asv 0.6's index.html loads from the network -> the committed copy of the same release.
VENDORED = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "jquery-3.3.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": "flot-0.8.3/jquery.flot.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js": "flot-0.8.3/jquery.flot.time.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js": (
        "flot-0.8.3/jquery.flot.selection.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js": (
        "flot-0.8.3/jquery.flot.categories.js"
    ),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": (
        "flot-orderbars-1.0.0/jquery.flot.orderBars.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js": "stupidtable-1.0.1/stupidtable.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": "blueimp-md5-2.19.0/md5.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": "bootstrap-3.1.1/js/bootstrap.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": "bootstrap-3.1.1/css/bootstrap.min.css",
}

_TAG = re.compile(r"<(script|link)\b[^>]*>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r'\s(src|href|integrity|crossorigin|referrerpolicy)="([^"]*)"', re.IGNORECASE)
# What a page loads by itself (a link the reader may click, <a href>, is not a load).
_LOADING_TAG = re.compile(r"<(?:script|link|img|iframe|source|embed|object)\b[^>]*>", re.IGNORECASE)
_REMOTE = re.compile(r'(?:src|href|data)="((?:https?:)?//[^"]*)"', re.IGNORECASE)


class NotOffline(cli.Fatal):
    """The published page still names an address on the network."""


def integrity(path: pathlib.Path, algorithm: str = "sha384") -> str:
    digest = hashlib.new(algorithm, path.read_bytes()).digest()
    return f"{algorithm}-{base64.b64encode(digest).decode()}"


def _matches(path: pathlib.Path, pinned: str | None) -> bool:
    """Whether the copy is byte-identical to the file asv's integrity attribute pins."""
    if not pinned or "-" not in pinned:
        return False
    algorithm = pinned.split("-", 1)[0]
    return algorithm in hashlib.algorithms_available and integrity(path, algorithm) == pinned


def _localize_tag(tag: str) -> str:
    attributes = {name.lower(): value for name, value in _ATTRIBUTE.findall(tag)}
    url = attributes.get("src") or attributes.get("href") or ""
    if url not in VENDORED:
        return tag
    copy = VENDOR_SOURCE / VENDORED[url]
    pinned = attributes.get("integrity")
    new_integrity = pinned if _matches(copy, pinned) else integrity(copy)
    local = f"{VENDOR_DIR}/{VENDORED[url]}"

    def rewrite(match: re.Match) -> str:
        name = match.group(1).lower()
        if name in ("src", "href"):
            return f' {match.group(1)}="{local}"'
        if name == "integrity":
            return f' integrity="{new_integrity}"'
        return ""  # crossorigin, referrerpolicy: for a CDN, meaningless for a file of the same origin

    rewritten = _ATTRIBUTE.sub(rewrite, tag)
    if "integrity=" not in rewritten:
        rewritten = rewritten[:-1].rstrip("/").rstrip() + f' integrity="{new_integrity}">'
    return rewritten


def localize(html_dir: pathlib.Path) -> list[str]:
    """Serve every library from html_dir/vendor; the addresses replaced. NotOffline if one is left."""
    shutil.copytree(VENDOR_SOURCE, html_dir / VENDOR_DIR, dirs_exist_ok=True)
    replaced = []
    for page in sorted(html_dir.glob("*.html")):
        text = page.read_text(encoding="utf-8")
        replaced += [url for url in VENDORED if url in text]
        text = _TAG.sub(lambda m: _localize_tag(m.group(0)), text)
        left = [url for tag in _LOADING_TAG.findall(text) for url in _REMOTE.findall(tag)]
        if left:
            raise NotOffline(
                f"{page.name} still loads {', '.join(sorted(set(left)))}: asv's page changed; add a copy of it "
                f"under third_party/asv-www and to bench.asvtools.dashboard.VENDORED"
            )
        page.write_text(text, encoding="utf-8")
    return sorted(set(replaced))


@dataclasses.dataclass
class Published:
    html: pathlib.Path
    log: str  # asv publish's output
    left_out_params: list[str]  # environment keys that told no lines apart (bench.asvtools.publish_input)
    unmeasured: list[str]  # benchmarks no machine has a result for, not listed (bench.asvtools.page_fixes)
    alerts: list  # the Regressions page's alerts, one per step up (bench.triage.alerts.Alert), as the Triage page lists them


def publish(
    config: pathlib.Path,
    html_dir: pathlib.Path | None = None,
    results_dir: pathlib.Path | None = None,
    triage_dir: pathlib.Path | None = None,
) -> Published:
    """`asv publish` of `config` (into html_dir / from results_dir where given), then made offline, with the
    Triage page of the records in triage_dir (default: results/triage beside the asv results).

    asv publishes a copy of the results whose environments line up (bench.asvtools.publish_input),
    and its page is then changed where it hid what the results hold (bench.asvtools.page_fixes).
    """
    config = config.resolve()
    with tempfile.TemporaryDirectory() as folder:
        target = pathlib.Path(folder) / "asv.conf.json"
        results = pathlib.Path(folder) / "results"
        if results_dir is None:
            scratch.write(config, target)  # asv.conf.json has comments: read its results_dir from a plain copy
            results_dir = scratch.resolved(target, "results_dir")
        left_out = publish_input.copy_for_publishing(results_dir.resolve(), results)
        paths = {"results_dir": str(results)}
        if html_dir is not None:
            paths["html_dir"] = str(html_dir.resolve())
        scratch.write(config, target, **paths)
        html = scratch.resolved(target, "html_dir")
        done = subprocess.run(
            [sys.executable, "-m", "asv", "publish", "--config", str(target)], capture_output=True, text=True
        )
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise cli.Fatal(f"asv publish failed: {last[0]}")
    localize(html)
    unmeasured = page_fixes.fix(html)
    # The triage records sit beside the asv results: results/asv -> results/triage (bench.triage.record)
    alerts = triage_page.write(html, results_dir.resolve(), triage_dir or results_dir.resolve().parent / "triage")
    return Published(html, done.stdout + done.stderr, left_out, unmeasured, alerts)


def regressions(html_dir: pathlib.Path) -> tuple[int, int]:
    """What the published Regressions page lists: (cells, rows). A cell (a benchmark at one set of
    parameters) has a row per step up in its history."""
    path = html_dir / "regressions.json"
    listed = json.loads(path.read_text())["regressions"] if path.exists() else []
    return len(listed), sum(len(entry[6] or ()) for entry in listed)


def main(argv=None) -> int:
    parser = cli.Parser(prog="python -m bench.asvtools.dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=pathlib.Path, default=environment.REPO / "asv.conf.json")
    parser.add_argument("--html-dir", type=pathlib.Path, help="where the page goes (default: the config's html_dir)")
    args = parser.parse_args(argv)
    if not args.config.is_file():
        raise cli.Fatal(f"--config {args.config}: no such file")
    if args.html_dir is not None:
        cli.check_out_dir(args.html_dir, "--html-dir")
    published = publish(args.config, args.html_dir)
    html = published.html
    cells, rows = regressions(html)
    print(f"dashboard: {html}; it needs no network. Regressions page: {rows} steps up in {cells} benchmark cells")
    if published.unmeasured:
        print(f"not listed, no machine has a result for them yet: {', '.join(published.unmeasured)}")
    print(f"open it: python -m http.server --bind 127.0.0.1 --directory {html} 8000, then http://127.0.0.1:8000/")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench.asvtools.dashboard", main))
