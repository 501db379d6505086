"""The dashboard in a real browser, offline: headless Chromium driven by Playwright, every request
outside 127.0.0.1 blocked and recorded.

The browser test (tests/test_dashboard.py) and the README's screenshot use it:

    python -m bench.asvtools.browser --html-dir results/html --out docs/dashboard.png [--page HASH]

Chromium is the system's (Debian's package `chromium`; STEPBENCH_CHROMIUM names another
binary); Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import os
import pathlib
import shutil
import sys
import threading
import urllib.parse

from bench.harness import cli

CHROMIUM_ENV = "STEPBENCH_CHROMIUM"
# Chromium as root in a container, with nothing of its own reaching out: without the
# background-networking flags it looks up Google's hosts at every start.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TIMEOUT_MS = 30_000
LOCAL_HOSTS = ("127.0.0.1",)


def chromium() -> str | None:
    """The Chromium binary to drive, or None where there is none."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        return named if os.access(named, os.X_OK) else None
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@contextlib.contextmanager
def serve(directory: pathlib.Path):
    """The folder over HTTP on 127.0.0.1 at a free port, as `python -m http.server` serves it; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@dataclasses.dataclass
class Browser:
    """One page in headless Chromium; what it tried to reach outside localhost and the errors it saw."""

    page: object
    blocked: list = dataclasses.field(default_factory=list)  # URLs outside LOCAL_HOSTS, aborted
    errors: list = dataclasses.field(default_factory=list)  # uncaught exceptions, console errors, failed loads

    def open(self, url: str) -> None:
        self.page.goto(url)
        # asv's page is ready when its index is loaded.
        self.page.wait_for_function("window.$ && $.asv && $.asv.main_json !== undefined", timeout=TIMEOUT_MS)

    def graph_series(self) -> list[tuple[str, int]]:
        """(label, number of points drawn) of each line of the graph shown, once it is drawn. A run
        without a value for the benchmark (asv run -b of other parameters) is a null in the data, not a point."""
        drawn = "$('#main-graph').data('plot') && $('#main-graph').data('plot').getData().length > 0"
        self.page.wait_for_function(drawn, timeout=TIMEOUT_MS)
        self.page.wait_for_load_state("networkidle")
        return [
            tuple(s)
            for s in self.page.evaluate(
                "$('#main-graph').data('plot').getData().map(s => [s.label, s.data.filter(p => p[1] !== null).length])"
            )
        ]

    def regression_rows(self) -> int:
        self.page.wait_for_selector("#regressions-body table", timeout=TIMEOUT_MS)
        return self.page.evaluate("$('#regressions-body table tbody tr').length")


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 900):
    """A Browser on a fresh profile; Fatal where no Chromium or Playwright is installed."""
    executable = chromium()
    if executable is None:
        raise cli.Fatal(f"no Chromium found (install Debian's package chromium, or set {CHROMIUM_ENV})")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise cli.Fatal(f"Playwright is not installed ({error}): make venv installs it") from None
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            context = instance.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            found = Browser(page)

            def route(request_route):
                url = request_route.request.url
                if urllib.parse.urlsplit(url).hostname in LOCAL_HOSTS or url.startswith(("data:", "blob:")):
                    request_route.continue_()
                else:
                    found.blocked.append(url)
                    request_route.abort()

            context.route("**/*", route)
            page.on("pageerror", lambda error: found.errors.append(f"uncaught: {error}"))
            page.on("console", lambda message: message.type == "error" and found.errors.append(message.text))
            page.on("requestfailed", lambda request: found.errors.append(f"failed to load {request.url}"))
            page.on(
                "response",
                lambda response: (
                    response.status >= 400 and found.errors.append(f"HTTP {response.status}: {response.url}")
                ),
            )
            yield found
        finally:
            instance.close()


def main(argv=None) -> int:
    parser = cli.Parser(prog="python -m bench.asvtools.browser", description="A screenshot of the built dashboard.")
    parser.add_argument("--html-dir", type=pathlib.Path, default=pathlib.Path("results/html"))
    parser.add_argument("--out", type=pathlib.Path, required=True, help="PNG file to write")
    parser.add_argument("--page", default="", help="what follows # in the address: a graph, regressions, ...")
    args = parser.parse_args(argv)
    if not (args.html_dir / "index.html").is_file():
        raise cli.Fatal(f"--html-dir {args.html_dir}: no dashboard there (make dashboard builds it)")
    cli.check_out_dir(args.out.parent, "--out")
    with serve(args.html_dir) as url, browser() as found:
        found.open(url + "index.html" + (f"#{args.page}" if args.page else ""))
        if args.page and not args.page.startswith(("regressions", "summarylist")):
            found.graph_series()
        found.page.screenshot(path=str(args.out))
    for what, items in (("blocked", found.blocked), ("errors", found.errors)):
        if items:
            print(f"{what}: {items}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 1 if found.blocked or found.errors else 0


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench.asvtools.browser", main))
