"""ProgressBar: one progress bar for terminals, notebooks and Ray workers."""

from __future__ import annotations

import sys
import threading
from typing import Any, Iterable, Iterator, Optional

from .errors import ConfigError, closest

STYLES = ("auto", "notebook", "std", "ray")
COLOURS = {"success": "green", "failure": "red", "stop": "#9e9e9e"}  # grey


class ProgressBar:
    """A progress bar over ``tqdm`` that you iterate through or drive by hand.

    Wrap an iterable (``for x in ProgressBar(items, desc="Loading")``) and it
    counts each item and turns green when the iteration completes (red if the
    iterable raises); a dict yields its ``(key, value)`` pairs, as ``dict.items()``
    would. Or create one with ``total=`` and call :meth:`update`, then
    :meth:`success`, :meth:`failure` or :meth:`stop` (green, red, grey; each
    closes the bar). ``update`` may be called from any thread, so futures'
    callbacks can drive it.

    ``style`` picks the display: ``"auto"`` (``tqdm.auto``: a widget in Jupyter,
    text elsewhere), ``"notebook"``, ``"std"`` (plain text), or ``"ray"``: inside
    a Ray task or actor the bar is drawn by the driver (through Ray's
    ``tqdm_ray``; the driver must run with Ray's default ``log_to_driver=True``),
    and outside Ray it behaves like ``"auto"``. Other keywords (``unit``,
    ``ncols``, ``miniters``, ``disable``, ...) go to tqdm unchanged; ``color``
    is accepted as another spelling of tqdm's ``colour``.
    """

    def __init__(
        self,
        iterable: Optional[Iterable] = None,
        total: Optional[float] = None,
        desc: Optional[str] = None,
        style: str = "auto",
        unit: str = "item",
        color: Optional[str] = None,
        **tqdm_options: Any,
    ) -> None:
        if style not in STYLES:
            hint = closest(style, STYLES)
            raise ConfigError(f"style={style!r} is not a progress bar style{hint}; allowed: {', '.join(STYLES)}")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        if color is not None:
            tqdm_options.setdefault("colour", color)
        self._iterable = iterable.items() if isinstance(iterable, dict) else iterable
        self._lock = threading.Lock()
        self._closed = False
        self._count: float = 0
        self._desc = desc
        self._bar = _make_bar(style, total=total, desc=desc, unit=unit, **tqdm_options)

    def __iter__(self) -> Iterator:
        if self._iterable is None:
            raise TypeError("this ProgressBar wraps no iterable; call update() instead of iterating")
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        except Exception:
            self.failure()
            raise
        else:
            self.success()
        finally:
            self.close()

    @property
    def n(self) -> float:
        """How much has been counted so far (also when the bar is disabled)."""
        return self._count

    @property
    def total(self) -> Optional[float]:
        """The expected count (None when unknown)."""
        return self._bar.total

    def update(self, n: float = 1) -> None:
        """Count ``n`` more (thread-safe)."""
        with self._lock:
            if not self._closed:
                self._count += n
                self._bar.update(n)

    def set_n(self, n: float) -> None:
        """Set the count to ``n`` (thread-safe)."""
        with self._lock:
            if not self._closed:
                self._bar.update(n - self._count)
                self._count = n

    def set_description(self, desc: str) -> None:
        """Change the text shown before the bar."""
        with self._lock:
            self._desc = desc
            self._bar.set_description(desc)

    def set_total(self, total: Optional[float]) -> None:
        """Change the expected count (when more work turns up)."""
        with self._lock:
            self._bar.total = total
            self._bar.refresh()

    def set_unit(self, unit: str) -> None:
        """Change the unit shown after the counts."""
        with self._lock:
            self._bar.unit = unit
            self._bar.refresh()

    def refresh(self) -> None:
        """Redraw the bar now."""
        with self._lock:
            self._bar.refresh()

    def success(self, desc: Optional[str] = None, close: bool = True, append_desc: bool = True) -> None:
        """Show the bar as completed (green), then close it unless ``close=False``.

        ``desc`` is shown as ``"[desc] <description>"``, or instead of the description with ``append_desc=False``.
        """
        self._finish("success", desc, close, append_desc)

    def failure(self, desc: Optional[str] = None, close: bool = True, append_desc: bool = True) -> None:
        """Show the bar as failed (red), then close it unless ``close=False``; ``desc`` as in :meth:`success`."""
        self._finish("failure", desc, close, append_desc)

    def stop(self, desc: Optional[str] = None, close: bool = True, append_desc: bool = True) -> None:
        """Show the bar as stopped early (grey), then close it unless ``close=False``; ``desc`` as in ``success``."""
        self._finish("stop", desc, close, append_desc)

    def _finish(self, outcome: str, desc: Optional[str], close: bool, append_desc: bool) -> None:
        with self._lock:
            if self._closed:
                return
            if desc is not None:
                self._desc = f"[{desc}] {self._desc}" if append_desc and self._desc else desc
                self._bar.set_description(self._desc)
            if hasattr(self._bar, "colour"):
                self._bar.colour = COLOURS[outcome]
            self._bar.refresh()
        if close:
            self.close()

    def close(self) -> None:
        """Stop drawing the bar (calling it again does nothing)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        if exc_type is not None:
            self.failure()
        self.close()

    def __repr__(self) -> str:
        return f"<ProgressBar {self.n}/{self.total}{' closed' if self._closed else ''}>"


def _make_bar(style: str, **options: Any) -> Any:
    if style == "ray" and _in_ray_worker():
        from ray.experimental import tqdm_ray

        return tqdm_ray.tqdm(desc=options.get("desc"), total=options.get("total"), unit=options.get("unit"))
    if style == "notebook":
        return _notebook_bar(**options)
    if style == "std":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(**options)


def _notebook_bar(**options: Any) -> Any:
    from tqdm.notebook import tqdm

    try:
        return tqdm(**options)
    except ImportError as exc:
        raise ImportError(
            f'ProgressBar(style="notebook") needs Jupyter widgets ({exc}); install ipywidgets, '
            'or use style="auto", which falls back to text'
        ) from None


def _in_ray_worker() -> bool:
    """True inside a Ray task or actor (where the driver, not this process, owns the terminal)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    from .ray.compat import in_ray_worker

    return in_ray_worker()
