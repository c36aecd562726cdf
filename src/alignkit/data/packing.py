"""First-fit-decreasing packing of sequences (or shared-prefix blocks) into rows."""

from __future__ import annotations


def pack_rows(lengths: list[int], width: int) -> list[list[int]]:
    """First-fit decreasing: indices of sequences grouped into rows holding at most ``width`` tokens."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        slot = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            free.append(width - lengths[i])
        else:
            rows[slot].append(i)
            free[slot] -= lengths[i]
    return rows
