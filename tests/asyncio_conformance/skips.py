"""Every test of CPython's asyncio suite skipped for parallio's loop, with
the reason. Keys are ``module.Class.method`` (or ``module.Class`` for a
whole class)."""

SKIPS: dict[str, str] = {
}
