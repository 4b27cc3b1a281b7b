"""IceProd's API described once, without I/O: :mod:`.checks` (input rules), :mod:`.calls` (one
function per endpoint) and :mod:`.flows` (multi-step work the hook drives sync or async).

The contracts are in ``docs/architecture.md`` ("The api package").
"""
