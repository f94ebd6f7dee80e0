"""M_k's ID tables between one model file and rows sharded across training workers.

A sharded bump starts from M_{k-1}: each worker takes only its own rows of the previous tables
(`warm_id_rows`, as `--warm-start mean`; from a mapped file it reads only those pages). It ends
with one model file that the refresh and Serve read (`write_model_file`): rank 0 writes it in
place, each worker's rows going into the file a block at a time as they arrive, so no process
holds the whole tables (where torch cannot lay a file out without its bytes, rank 0 gathers
them, `gathered_model`, and saves them). All are collectives: every worker calls them, in the
same order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
import torch.distributed as dist

from bc_ray.core.row_shards import RowOwners, owners_rank
from bc_ray.core.warmstart import NOISE, copy_overlap
from bc_ray.exceptions import ConfigError, CorruptFileError
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.model_file import ID_TABLES, stored_rows
from bc_ray.models.graphsage.model_file_writer import (
    ModelFileWriter,
    layout_payload,
    writes_in_place,
)
from bc_ray.models.graphsage.serialization import save_model

logger = logging.getLogger(__name__)

BLOCK_BYTES = 64 << 20  # of ID rows, sent to rank 0 and written at a time


def _summed(values: torch.Tensor) -> torch.Tensor:
    """`values` summed over every worker."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values)
    return values


def _nonzero_rows(rows: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """Which rows have a nonzero value (M_{k-1} trained them), a chunk at a time: no copy of
    the table (mapped from its file)."""
    return torch.cat([rows[first:first + chunk].abs().sum(1) > 0  # a NaN row: untrained
                      for first in range(0, rows.shape[0], chunk)] or
                     [torch.zeros(0, dtype=torch.bool)])


def _moments(rows: torch.Tensor, kept: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """[sum, sum of squares, count] (each per column, float64) of the `kept` rows, a chunk of
    rows at a time: in float64 at once they would take twice the rows' own memory, and their
    squares as much again."""
    moments = torch.zeros(3, rows.shape[1], dtype=torch.double)
    for first in range(0, rows.shape[0], chunk):
        known = rows[first:first + chunk][kept[first:first + chunk]].double()
        moments[0] += known.sum(0)
        moments[1] += (known ** 2).sum(0)
        moments[2] += known.shape[0]
    return moments


@torch.no_grad()
def warm_id_rows(previous: EmbeddingModel, owners: RowOwners, rank: int, fresh: torch.Tensor,
                 seen: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """This worker's ID rows started from M_{k-1} as the one-table `--warm-start mean` starts
    them: the rows M_{k-1} trained are copied (into the leading columns when the widths
    differ); rows it did not train of entities `seen` in training now (new since, or without
    edges then) take their entity's mean trained row plus noise of a tenth of the rows' spread,
    both taken over every worker's rows. `fresh`: the worker's initial rows, which the copies
    overwrite in place (no second copy of the rows); `seen`: a flag per owned row."""
    if not previous.spec.id_embeddings:
        raise ConfigError(f"version {previous.spec} has no ID tables to start from")
    rows = fresh
    generator = torch.Generator().manual_seed(seed * 104_729 + rank)
    for entity, first, last, offset in owners.spans(rank):
        table = previous.ids[entity]  # its last row is padding
        copied = max(0, min(last, table.num_embeddings - 1) - first)
        old = stored_rows(table, first, first + copied)
        block = rows[offset:offset + last - first]
        copy_overlap(block[:copied], old)
        trained = torch.zeros(last - first, dtype=torch.bool)
        trained[:copied] = _nonzero_rows(old)
        total, squares, count = _summed(_moments(block, trained))
        new = seen[offset:offset + last - first] & ~trained
        if new.any() and count[0] > 0:
            mean = total / count
            spread = ((squares - count * mean ** 2) / (count - 1).clamp(min=1)).clamp(
                min=0).sqrt().clamp(min=1e-6)  # unbiased, as torch.std
            noise = torch.randn(int(new.sum()), rows.shape[1], generator=generator,
                                dtype=torch.double)
            block[new] = (mean + noise * spread * NOISE).to(rows.dtype)
    return rows


@torch.no_grad()
def gathered_model(model: EmbeddingModel, rows: torch.Tensor,
                   owners: RowOwners) -> EmbeddingModel | None:
    """On rank 0, M_k whole: `model`'s dense weights (a `sharded_model`, equal on every worker
    after DDP) with every worker's ID `rows` in tables of the snapshot's size (their padding row
    zero, for entities the tables do not know); None on the other ranks. Each worker sends its
    rows straight into their place in rank 0's tables (a receive per entity's span), so rank 0
    holds the tables and its own rows, never a buffer of the others'. Rank 0 builds the tables
    first and says whether it could, so that no worker is left sending to it."""
    rank = owners_rank()
    whole, failed = None, None
    if rank == 0:
        try:
            whole = _tables(model, owners.num_users, owners.num_items)
        except Exception as error:  # any: the other ranks must hear of it, not wait to send
            failed = error
    if not _agreed_on_rank0(failed is None):
        raise failed or ConfigError("rank 0 could not build M_k's tables: see its log")
    if rank != 0:
        for entity, first, last, offset in owners.spans(rank):
            if last > first:
                dist.send(rows[offset:offset + last - first].detach().contiguous(), dst=0)
        return None
    for sender in range(owners.workers):
        for entity, first, last, offset in owners.spans(sender):
            if last == first:
                continue
            place = whole.ids[entity].weight[first:last]  # rows of a contiguous table
            if sender == 0:
                place.copy_(rows[offset:offset + last - first])
            else:
                dist.recv(place, src=sender)
    return whole.eval()


@torch.no_grad()
def write_model_file(model: EmbeddingModel, rows: torch.Tensor, owners: RowOwners,
                     path: str | None, block_bytes: int = BLOCK_BYTES) -> None:
    """M_k's model file at `path` on rank 0 (None elsewhere): `model`'s dense weights (a
    `sharded_model`, equal on every worker after DDP) and every worker's ID `rows`, in tables
    of the snapshot's size (their padding row zero), as `save_model` writes the gathered model.
    Each worker sends its rows in blocks of `block_bytes`, which rank 0 writes into the file
    in place (`ModelFileWriter`): it holds one block of the others' rows, never the tables.
    Rank 0 decides, for every rank, whether it can (`_laid_out`); where it cannot, it gathers
    the tables and saves them."""
    rank = owners_rank()
    writer, failed = _laid_out(model, rows, owners, path) if rank == 0 else (None, None)
    how = _said_by_rank0(_FAILED if failed is not None else
                         _IN_PLACE if writer is not None else _GATHER)
    if how == _FAILED:
        raise failed or ConfigError("rank 0 could not lay M_k's model file out: see its log")
    if how == _GATHER:
        whole = gathered_model(model, rows, owners)
        if whole is not None:
            save_model(whole, path)
        return
    block = max(1, block_bytes // max(1, rows.shape[1] * rows.element_size()))
    if rank != 0:
        for _, first, last, offset in owners.spans(rank):
            for start, stop in _blocks(last - first, block):
                dist.send(rows[offset + start:offset + stop].contiguous(), dst=0)
        return
    with writer:
        _write_rows(writer, model, rows, owners, block)


_FAILED, _IN_PLACE, _GATHER = 0, 1, 2


def _laid_out(model: EmbeddingModel, rows: torch.Tensor, owners: RowOwners,
              path: str) -> tuple[ModelFileWriter | None, Exception | None]:
    """Rank 0's writer of M_k's file laid out at `path` (None where this torch cannot lay it
    out, or lays it out as `ModelFileWriter` does not know: gather instead), or the error that
    stopped it (any: the other ranks must hear of it rather than wait to send)."""
    writer = None
    try:
        if not writes_in_place():
            return None, None
        writer = ModelFileWriter(path, layout_payload(
            _tables(model, 0, 0), {"user": owners.num_users, "item": owners.num_items}))
        writer.check(f"{ID_TABLES}user.weight", rows)
        return writer, None
    except CorruptFileError as error:
        logger.warning("M_k's file is gathered and saved whole: %s", error)
        if writer is not None:
            writer.discard()
        return None, None
    except Exception as error:
        if writer is not None:
            writer.discard()
        return None, error


def _blocks(count: int, block: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of each block of `block` rows of `count`, in order: as a worker sends
    its span and rank 0 receives it."""
    return ((start, min(start + block, count)) for start in range(0, count, block))


def _write_rows(writer: ModelFileWriter, model: EmbeddingModel, rows: torch.Tensor,
                owners: RowOwners, block: int) -> None:
    """Rank 0's side of `write_model_file`: the dense weights, then each table's rows in
    order, its own from `rows`, the others' a block at a time as their owners send them, then
    the padding row."""
    for name, tensor in model.state_dict().items():
        if not name.startswith(ID_TABLES):
            writer.append(name, tensor.detach())
    received = torch.empty(min(block, max(owners.num_users, owners.num_items))
                           if owners.workers > 1 else 0, rows.shape[1], dtype=rows.dtype)
    for entity in ("user", "item"):
        table = f"{ID_TABLES}{entity}.weight"
        for sender in range(owners.workers):
            first, last, offset = {kind: span for kind, *span in owners.spans(sender)}[entity]
            for start, stop in _blocks(last - first, block):
                if sender == 0:
                    writer.append(table, rows[offset + start:offset + stop])
                else:
                    dist.recv(received[:stop - start], src=sender)
                    writer.append(table, received[:stop - start])
        writer.append(table, torch.zeros(1, rows.shape[1], dtype=rows.dtype))  # padding row


def _tables(model: EmbeddingModel, num_users: int, num_items: int) -> EmbeddingModel:
    """M_k with `model`'s dense weights and uninitialised ID tables of `num_users` users and
    `num_items` items (their padding row zero)."""
    whole = EmbeddingModel(model.spec, num_users, num_items,
                           model.encoders["user"].vocab_sizes, model.encoders["item"].vocab_sizes,
                           initialize=False)
    dense = {k: v for k, v in model.state_dict().items() if not k.startswith(ID_TABLES)}
    missing, unexpected = whole.load_state_dict(dense, strict=False)
    if unexpected or any(not name.startswith(ID_TABLES) for name in missing):
        raise ConfigError(f"the sharded model's dense weights do not fit M_k: missing {missing}, "
                          f"unexpected {unexpected}")
    for table in whole.ids.values():
        table.weight[-1:] = 0.0  # the padding row
    return whole


def _agreed_on_rank0(ok: bool) -> bool:
    """Rank 0's `ok`, on every worker."""
    return bool(_said_by_rank0(int(ok)))


def _said_by_rank0(value: int) -> int:
    """Rank 0's `value`, on every worker."""
    said = torch.tensor([value])
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(said, src=0)
    return int(said.item())
