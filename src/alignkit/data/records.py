"""Read rows from JSONL / JSON / CSV / TSV (each optionally gzipped) / Parquet / ``save_to_disk`` folders / hub ids,
keeping where each came from.

Every row carries ``where`` (``file.jsonl:12`` or ``file.parquet row 12``, 1-based) so that validation
errors can name the exact place to fix.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq

from alignkit.data import llamafactory
from alignkit.errors import AlignkitError, DataValidationError, Fault

MAX_REPORTED_FAULTS = 20


@dataclass(frozen=True)
class Record:
    """A row as read, with where it came from (``file.jsonl:12``)."""

    data: Any
    where: str


class FaultCollector:
    """Collects faults, keeping the first ``limit`` and counting the rest."""

    def __init__(self, source: str, limit: int = MAX_REPORTED_FAULTS):
        self.source, self.limit, self.faults, self.total = source, limit, [], 0

    def add(self, where: str, field: str | None, message: str) -> None:
        """Record a fault at ``where`` (and ``field``); past the limit it is only counted."""
        self.total += 1
        if len(self.faults) < self.limit:
            self.faults.append(Fault(where, field, message))

    def raise_if_any(self) -> None:
        """Raise one :class:`DataValidationError` listing the faults, if there were any."""
        if self.total:
            raise DataValidationError(self.source, self.faults, self.total)


def read_records(source: str | Path, split: str = "train", fields: dict[str, str] | None = None) -> list[Record]:
    """All rows of ``source`` (several, comma-separated: see :func:`data_sources`); invalid JSON lines are
    reported together as a DataValidationError. With
    ``fields`` ({ours: yours}), each row's field ``yours`` is read as ``ours``. Rows in LLaMA-Factory's
    alpaca or sharegpt form become alignkit's (:mod:`alignkit.data.llamafactory`)."""
    records = [record for one in data_sources(source) for record in _read_records(one, split)]
    if fields:
        records = [Record(_renamed(r.data, fields), r.where) if isinstance(r.data, dict) else r for r in records]
    faults, converted = FaultCollector(str(source)), []
    for record in records:
        if not llamafactory.is_llamafactory_row(record.data):
            converted.append(record)
            continue
        try:
            converted.append(Record(llamafactory.convert_row(record.data), record.where))
        except llamafactory.RowFault as fault:
            faults.add(record.where, fault.field, str(fault))
    faults.raise_if_any()
    return converted


def data_sources(source: str | Path) -> list[str]:
    """The files, folders or hub ids ``source`` names: itself, or, where no such path exists, its
    comma-separated parts (LLaMA-Factory's and OpenRLHF's dataset lists), read one after another."""
    text = str(source)
    if "," not in text or Path(text).exists():
        return [text]
    return [part.strip() for part in text.split(",") if part.strip()]


def _renamed(row: dict, fields: dict[str, str]) -> dict:
    out = {key: value for key, value in row.items() if key not in fields.values()}
    out.update({ours: row[yours] for ours, yours in fields.items() if yours in row})
    return out


def _read_records(source: str | Path, split: str) -> list[Record]:
    path = Path(source)
    if path.is_dir():
        return _read_saved_dataset(path, split)
    if path.is_file():
        if split != "train":  # as datasets does: a single data file is one split, named train
            raise AlignkitError(
                f"{path}: a single data file has one split ('train'), not '{split}'; give held-out rows as eval_data "
                "(or a save_to_disk folder with splits)"
            )
        suffix = _data_suffix(path.name)
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix == ".json":
            return _read_json(path)
        if suffix in (".csv", ".tsv"):
            return _read_csv(path, "\t" if suffix == ".tsv" else ",")
        if suffix == ".parquet":
            return _read_parquet(path)
        raise AlignkitError(
            f"{path}: unsupported data file type '{''.join(path.suffixes[-2:]) or path.name}' (use .jsonl, .json, "
            ".csv or .tsv (each optionally .gz), .parquet or a save_to_disk folder)"
        )
    if _looks_like_hub_id(str(source)):
        return _read_hub(str(source), split)
    where = (
        "" if Path(source).is_absolute() else f" under {Path.cwd()}: relative paths are read from the current directory"
    )
    raise AlignkitError(f"data not found: {source} (no such file or folder{where})")


def _file_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped for ``.gz``, without a UTF-8 byte-order mark (as Windows tools write)."""
    data = gzip.decompress(path.read_bytes()) if path.suffix.lower() == ".gz" else path.read_bytes()
    return data.removeprefix(codecs.BOM_UTF8)


def _not_utf8(path: Path, data: bytes, exc: UnicodeDecodeError, line: int | None = None) -> Fault:
    """The fault of a byte that is not UTF-8 (in ``data``, a whole file or its line ``line``), and what to do."""
    line = line if line is not None else data[: exc.start].count(b"\n") + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    byte = data[exc.start : exc.start + 1].hex()
    return Fault(f"{path}:{line}", None, f"not UTF-8 text (byte 0x{byte}, column {column}); save the file as UTF-8")


def _read_jsonl(path: Path) -> list[Record]:
    faults = FaultCollector(str(path))
    records = []
    for number, raw in enumerate(_file_bytes(path).split(b"\n"), start=1):
        where = f"{path}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            fault = _not_utf8(path, raw, exc, number)
            faults.add(fault.where, None, fault.message)
            continue
        if not line.strip():
            continue
        try:
            records.append(Record(json.loads(line), where))
        except json.JSONDecodeError as exc:
            faults.add(where, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
    faults.raise_if_any()
    return records


def _decoded(path: Path) -> str:
    """The whole file as text; a byte that is not UTF-8 is a fault naming its line."""
    data = _file_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataValidationError(str(path), [_not_utf8(path, data, exc)]) from None


def _read_json(path: Path) -> list[Record]:
    try:
        data = json.loads(_decoded(path))
    except json.JSONDecodeError as exc:
        raise DataValidationError(
            str(path), [Fault(f"{path}:{exc.lineno}", None, f"invalid JSON: {exc.msg} (column {exc.colno})")]
        ) from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        raise DataValidationError(
            str(path), [Fault(str(path), None, "expected a JSON array of objects (or JSONL, one object per line)")]
        )
    return [Record(row, f"{path} row {i}") for i, row in enumerate(data, start=1)]


def _read_csv(path: Path, delimiter: str) -> list[Record]:
    """A header row names the fields; every cell is text (a quoted cell may span lines: a row is named by the
    line it starts on). Empty cells are left out, so an empty answer reads as a missing field."""
    reader = csv.reader(io.StringIO(_decoded(path), newline=""), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        return []
    faults, records = FaultCollector(str(path)), []
    start = reader.line_num + 1
    for cells in reader:
        where = f"{path}:{start}"
        start = reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            faults.add(where, None, f"{len(cells)} cells where the header has {len(header)} ({', '.join(header)})")
            continue
        records.append(Record({k: v for k, v in zip(header, cells) if v != ""}, where))
    faults.raise_if_any()
    return records


def _read_parquet(path: Path) -> list[Record]:
    rows = pq.read_table(path).to_pylist()
    return [Record(row, f"{path} row {i}") for i, row in enumerate(rows, start=1)]


def _read_saved_dataset(path: Path, split: str) -> list[Record]:
    import datasets  # imported only here and for hub ids: 80 MB of every training process's memory otherwise

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise AlignkitError(f"{path}: not a datasets.save_to_disk folder ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise AlignkitError(f"{path}: has splits {list(loaded)}, none named '{split}'")
        loaded = loaded[split]
    return [Record(row, f"{path} row {i}") for i, row in enumerate(loaded, start=1)]


DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")  # the file types read above


def _data_suffix(name: str) -> str:
    """A data file's type by its name, lower case; a gzipped file by its inner type (``.jsonl.gz`` -> ``.jsonl``)."""
    return Path(name.lower().removesuffix(".gz")).suffix


def _looks_like_hub_id(name: str) -> bool:
    """``owner/name``, or ``owner/name/folder...`` (a folder of the repository: its data_dir) that does
    not end like a data file (``data/pairs.jsonl`` is a missing local file, not a hub repository)."""
    parts = name.split("/")
    if _data_suffix(parts[-1]) in DATA_SUFFIXES:
        return False
    return len(parts) >= 2 and all(parts) and not name.startswith((".", "/", "~"))


def _read_hub(name: str, split: str) -> list[Record]:
    import datasets

    repo, _, data_dir = name.partition("/")[2].partition("/")  # owner/name[/data_dir]
    repo = name.split("/")[0] + "/" + repo
    try:
        loaded = datasets.load_dataset(repo, data_dir=data_dir or None, split=split)
    except Exception as exc:  # network, auth, missing dataset: all reported the same way
        raise AlignkitError(f"could not load dataset '{name}' (split '{split}') from the hub: {exc}") from None
    return [Record(row, f"{name} row {i}") for i, row in enumerate(loaded, start=1)]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as JSONL (UTF-8, one object per line), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def split_train_eval(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic held-out split: ``fraction`` of the items (at least one when > 0) go to eval."""
    if fraction <= 0 or len(items) < 2:
        return list(items), []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(items) - 1, max(1, round(len(items) * fraction)))
    held = set(order[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def load_train_eval(config, load: Callable[..., list]) -> tuple[list, list]:
    """Validated train and eval examples: eval from eval_data, else from train_data's
    dataset_test_split, else an eval_split of train_data."""
    fields = config.data_fields or None

    def read(source: str, split: str) -> list:
        return load_each(source, config.max_samples, lambda one: load(one, split, fields=fields), config)

    train = read(config.train_data, config.dataset_train_split)
    if config.eval_data:
        return train, read(config.eval_data, config.dataset_test_split or "train")
    if config.dataset_test_split:
        return train, read(config.train_data, config.dataset_test_split)
    return split_train_eval(train, config.eval_split, config.seed)


def load_each(source: str, limit: int | None, load: Callable[[str], list], config) -> list:
    """``load(one)`` for each dataset ``source`` names, the first ``limit`` of each (LLaMA-Factory's
    max_samples), one after another, each prompt in the config's ``prompt_template``."""
    items = [item for one in data_sources(source) for item in load(one)[:limit]]
    return with_prompt_template(items, getattr(config, "prompt_template", None))


def with_prompt_template(items: list, template: str | None) -> list:
    """``items`` (examples with a ``prompt``, or prompt rows) with each plain-text prompt put in ``template``'s
    ``{}`` (OpenRLHF's input_template); a conversation cannot be, and is refused naming its row."""
    if not template:
        return items
    out = []
    for item in items:
        prompt = item.get("prompt") if isinstance(item, dict) else getattr(item, "prompt", None)
        if prompt is None:  # SFT's conversations and plain text have no prompt to format
            out.append(item)
            continue
        if not isinstance(prompt, str):
            where = item.get("where") if isinstance(item, dict) else item.where
            raise AlignkitError(f"{where}: prompt_template formats plain-text prompts; this prompt is a conversation")
        formatted = template.replace("{}", prompt, 1)
        out.append(
            {**item, "prompt": formatted} if isinstance(item, dict) else dataclasses.replace(item, prompt=formatted)
        )
    return out
