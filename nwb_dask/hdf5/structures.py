"""HDF5's on-disk structures, parsed just enough to know what each points to.

The walker behind :mod:`nwb_dask.hdf5.prefetch`: given an item (a structure's
kind and absolute address) and the bytes fetched so far, :meth:`Walker.parse`
returns the items it refers to (children's object headers, B-tree nodes,
heaps, small data), or raises :class:`NeedBytes` naming the bytes it lacks.
The layouts follow the HDF5 File Format Specification version 3.0; see
:mod:`nwb_dask.hdf5.prefetch` for what is followed and why it is written here.
"""

from __future__ import annotations

import struct
from typing import Callable

__all__ = ["CHUNK_INDEX_BYTES", "SIGNATURE", "SMALL_DATA", "WINDOW", "NeedBytes", "Walker", "find_superblock"]

#: The HDF5 format signature (at 0, 512, 1024, ... after a user block).
SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Bytes fetched at a structure's address when its size is not known yet (HDF5 itself reads 512 speculatively).
WINDOW = 4096
#: Bytes of v1 B-tree chunk index nodes fetched per file (beyond: chunk lookups read nodes on demand).
CHUNK_INDEX_BYTES = 16 << 20
#: Contiguous datasets up to this size are fetched too (scalars, short strings and vectors pynwb reads on open).
SMALL_DATA = 64 << 10



class NeedBytes(Exception):
    """The bytes ``(offset, length)`` (absolute) are not here yet."""

    def __init__(self, offset: int, length: int):
        self.range = (offset, length)


class Walker:
    """Parses HDF5 structures from fetched bytes and says which structures each points to.

    :meth:`parse` takes an item ``(kind, absolute address, ...)`` and returns the items it
    refers to; it raises :class:`NeedBytes` for bytes not fetched yet, :meth:`window` is what
    to fetch for an item before parsing it.
    """

    def __init__(self, peek: Callable[[int, int], bytes | None], size: int):
        self.peek = peek
        self.size = size
        self.base = 0
        self.O = 8  # size of offsets
        self.L = 8  # size of lengths
        self.undef = (1 << 64) - 1
        self.page = None
        self.istore_k = 32  # chunk B-tree K (HDF5's default; superblock v1 may say otherwise)
        self.chunk_index_bytes = 0
        self.skipped: dict[str, int] = {}

    # -- bytes -------------------------------------------------------------- #
    def get(self, offset: int, length: int) -> bytes:
        """Bytes at an absolute ``offset``; raises :class:`NeedBytes` when not fetched yet."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"structure at {offset}+{length} lies outside the file")
        data = self.peek(offset, length)
        if data is None:
            raise NeedBytes(offset, length)
        return data

    def addr(self, buf: bytes, pos: int) -> int | None:
        """A file address in ``buf`` at ``pos`` as an absolute offset (None: undefined)."""
        value = int.from_bytes(buf[pos : pos + self.O], "little")
        if value == self.undef:
            return None
        return self.base + value

    def length(self, buf: bytes, pos: int) -> int:
        return int.from_bytes(buf[pos : pos + self.L], "little")

    def skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1

    # -- superblock ---------------------------------------------------------- #
    def superblock(self, at: int) -> list[tuple]:
        head = self.get(at, min(96, self.size - at))
        version = head[8]
        if version in (0, 1):
            self.O, self.L = head[13], head[14]
            self.undef = (1 << (8 * self.O)) - 1
            if version == 1:
                self.istore_k = int.from_bytes(head[24:26], "little") or 32
            pos = 24 + (4 if version == 1 else 0)
            need = pos + 4 * self.O + 2 * self.O + 24
            head = self.get(at, need)
            self.base = int.from_bytes(head[pos : pos + self.O], "little")
            entry = pos + 4 * self.O
            return self.symbol_entry(head, entry)
        if version in (2, 3):
            self.O, self.L = head[9], head[10]
            self.undef = (1 << (8 * self.O)) - 1
            self.base = int.from_bytes(head[12 : 12 + self.O], "little")
            ext = self.addr(head, 12 + self.O)
            root = self.addr(head, 12 + 3 * self.O)
            items = [("oh", root)] if root is not None else []
            if ext is not None:
                items.append(("oh-ext", ext))
            return items
        self.skip(f"superblock v{version}")
        return []

    def symbol_entry(self, buf: bytes, pos: int) -> list[tuple]:
        """A symbol table entry: the object's header, and the group's B-tree and heap when cached."""
        items = []
        header = self.addr(buf, pos + self.O)
        if header is not None:
            items.append(("oh", header))
        cache_type = int.from_bytes(buf[pos + 2 * self.O : pos + 2 * self.O + 4], "little")
        if cache_type == 1:
            scratch = pos + 2 * self.O + 8
            for kind, a in (("btree", self.addr(buf, scratch)), ("lheap", self.addr(buf, scratch + self.O))):
                if a is not None:
                    items.append((kind, a))
        return items

    # -- object headers ------------------------------------------------------ #
    def object_header(self, at: int, extension: bool = False) -> list[tuple]:
        head = self.get(at, 16)
        if head[:4] == b"OHDR":
            flags = head[5]
            pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
            width = 1 << (flags & 3)
            head = self.get(at, pos + width)
            chunk0 = int.from_bytes(head[pos : pos + width], "little")
            start = pos + width
            buf = self.get(at, start + chunk0 + 4)
            return self.messages_v2(buf, start, start + chunk0, flags, extension)
        if head[0] == 1:
            size = int.from_bytes(head[8:12], "little")
            buf = self.get(at, 16 + size)
            return self.messages_v1(buf, 16, 16 + size, extension)
        self.skip("object header (unknown version)")
        return []

    def continuation(self, at: int, length: int, v2: bool, flags: int, extension: bool) -> list[tuple]:
        buf = self.get(at, length)
        if v2:
            if buf[:4] != b"OCHK":
                self.skip("continuation (bad signature)")
                return []
            return self.messages_v2(buf, 4, length - 4, flags, extension)
        return self.messages_v1(buf, 0, length, extension)

    def messages_v1(self, buf: bytes, pos: int, end: int, extension: bool) -> list[tuple]:
        items: list[tuple] = []
        msgs = []
        while pos + 8 <= end:
            mtype, size, mflags = struct.unpack_from("<HHB", buf, pos)
            msgs.append((mtype, mflags, buf[pos + 8 : pos + 8 + size]))
            pos += 8 + size
        for mtype, mflags, data in msgs:
            items += self.message(mtype, mflags, data, msgs, v2=False, oh_flags=0, extension=extension)
        return items

    def messages_v2(self, buf: bytes, pos: int, end: int, oh_flags: int, extension: bool) -> list[tuple]:
        items: list[tuple] = []
        msgs = []
        header = 4 + (2 if oh_flags & 0x04 else 0)
        while pos + header <= end:
            mtype, size, mflags = struct.unpack_from("<BHB", buf, pos)
            msgs.append((mtype, mflags, buf[pos + header : pos + header + size]))
            pos += header + size
        for mtype, mflags, data in msgs:
            items += self.message(mtype, mflags, data, msgs, v2=True, oh_flags=oh_flags, extension=extension)
        return items

    def message(self, mtype: int, mflags: int, data: bytes, msgs: list, v2: bool, oh_flags: int,
                extension: bool) -> list[tuple]:
        O = self.O
        if mflags & 0x02 and mtype not in (0x10,):  # a shared message: stored in another object header
            return self.shared(data)
        if mtype == 0x10 and len(data) >= O + self.L:  # continuation
            a = self.addr(data, 0)
            return [("cont", a, self.length(data, O), v2, oh_flags, extension)] if a is not None else []
        if mtype == 0x11 and len(data) >= 2 * O:  # symbol table: v1 B-tree and local heap
            return [(k, a) for k, a in (("btree", self.addr(data, 0)), ("lheap", self.addr(data, O))) if a is not None]
        if mtype == 0x06:  # link
            return self.link(data)
        if mtype == 0x02:  # link info: dense links
            return self.dense(data, "links")
        if mtype == 0x15:  # attribute info: dense attributes
            return self.dense(data, "attributes")
        if mtype == 0x0C:  # attribute
            return self.attribute(data)
        if mtype == 0x08:  # data layout
            return self.layout(data, msgs)
        if mtype == 0x17 and extension and len(data) >= 4 + 2 * self.L:  # file space info (superblock extension)
            version, strategy = data[0], data[1]
            if version == 1 and strategy == 1:  # H5F_FSPACE_STRATEGY_PAGE
                page = self.length(data, 3 + self.L)
                if page > 0:
                    self.page = page
        return []

    def shared(self, data: bytes) -> list[tuple]:
        version = data[0] if data else 0
        if version == 1 and len(data) >= 8 + self.O:
            a = self.addr(data, 8)
        elif version == 2 and len(data) >= 2 + self.O:
            a = self.addr(data, 2)
        elif version == 3 and len(data) >= 2 + self.O and data[1] == 2:
            a = self.addr(data, 2)
        else:
            self.skip("shared message in the shared-message heap")
            return []
        return [("oh", a)] if a is not None else []

    @staticmethod
    def link_header(buf: bytes, pos: int) -> tuple[int, int, int]:
        """A link message (v1) at ``pos``: ``(link type, name length, offset of its link information)``."""
        flags = buf[pos + 1]
        p = pos + 2
        ltype = 0
        if flags & 0x08:
            ltype = buf[p]
            p += 1
        if flags & 0x04:  # creation order
            p += 8
        if flags & 0x10:  # character set
            p += 1
        width = 1 << (flags & 3)
        nlen = int.from_bytes(buf[p : p + width], "little")
        return ltype, nlen, p + width + nlen

    def link(self, data: bytes) -> list[tuple]:
        if not data or data[0] != 1:
            return []
        ltype, _, pos = self.link_header(data, 0)
        if ltype == 0 and len(data) >= pos + self.O:
            a = self.addr(data, pos)
            return [("oh", a)] if a is not None else []
        if ltype == 64:
            self.skip("external link")
        return []

    def dense(self, data: bytes, what: str) -> list[tuple]:
        if len(data) < 2:
            return []
        flags = data[1]
        pos = 2 + (8 if what == "links" and flags & 1 else 0) + (2 if what == "attributes" and flags & 1 else 0)
        heap = self.addr(data, pos) if len(data) >= pos + self.O else None
        index = self.addr(data, pos + self.O) if len(data) >= pos + 2 * self.O else None
        items = []
        if heap is not None:
            items.append(("frhp", heap, what))
        if index is not None:
            items.append(("bthd", index))  # the name index (h5py reads it to look names up)
        return items

    # -- attributes and datasets ---------------------------------------------- #
    def attribute(self, data: bytes) -> list[tuple]:
        version = data[0] if data else 0
        if version not in (1, 2, 3) or len(data) < 8:
            return []
        flags = data[1]
        nsize, tsize, ssize = struct.unpack_from("<HHH", data, 2)
        pos = 8 + (1 if version == 3 else 0)
        if version == 1:
            pad = lambda n: (n + 7) & ~7  # noqa: E731
            tpos = pos + pad(nsize)
            dpos = tpos + pad(tsize) + pad(ssize)
        else:
            tpos = pos + nsize
            dpos = tpos + tsize + ssize
        if flags & 0x01:  # shared datatype: a committed datatype's header
            return self.shared(data[tpos : tpos + tsize])
        return self.values(data[tpos : tpos + tsize], data[dpos:])

    def attribute_length(self, data: bytes, pos: int) -> int | None:
        """Bytes of the (v2/v3, unshared) attribute message at ``pos``, from its dataspace and datatype; None if unknown."""
        version = data[pos]
        if version not in (1, 2, 3) or (version > 1 and data[pos + 1] & 0x03):
            return None
        nsize, tsize, ssize = struct.unpack_from("<HHH", data, pos + 2)
        pad = (lambda n: (n + 7) & ~7) if version == 1 else (lambda n: n)  # noqa: E731  (v1 pads to 8)
        tpos = pos + 8 + (1 if version == 3 else 0) + pad(nsize)
        spos = tpos + pad(tsize)
        if spos + ssize > len(data) or tsize < 8 or ssize < 2:
            return None
        ssize = pad(ssize)
        elem = int.from_bytes(data[tpos + 4 : tpos + 8], "little")
        sversion, rank = data[spos], data[spos + 1]
        if sversion == 2 and data[spos + 3] == 2:  # null dataspace
            count = 0
        else:
            dims_at = spos + (8 if sversion == 1 else 4)
            count = 1
            for i in range(rank):
                count *= self.length(data, dims_at + i * self.L)
        return spos + ssize + count * elem - pos

    def values(self, dtype: bytes, raw: bytes) -> list[tuple]:
        """Global heap collections (variable-length data) and objects (references) that ``raw`` points to."""
        if not dtype:
            return []
        cls = dtype[0] & 0x0F
        items: list[tuple] = []
        if cls == 9:  # variable-length: (length 4, collection address, index 4) per element
            step = 8 + self.O
            seen = set()
            for pos in range(0, len(raw) - step + 1, step):
                a = self.addr(raw, pos + 4)
                if a is not None and a not in seen and int.from_bytes(raw[pos : pos + 4], "little"):
                    seen.add(a)
                    items.append(("gcol", a))
        elif cls == 7 and (dtype[1] & 0x0F) == 0:  # object references
            for pos in range(0, len(raw) - self.O + 1, self.O):
                a = self.addr(raw, pos)
                if a is not None and a != self.base:
                    items.append(("oh", a))
        return items

    def layout(self, data: bytes, msgs: list) -> list[tuple]:
        version = data[0] if data else 0
        dtype = next((d for t, f, d in msgs if t == 0x03 and not f & 0x02), b"")
        if version >= 3 and len(data) >= 2:  # v5 (HDF5 2.0) lays chunked indexes out as v4
            cls = data[1]
            if cls == 0 and len(data) >= 4:  # compact: the data is here
                size = int.from_bytes(data[2:4], "little")
                return self.values(dtype, data[4 : 4 + size])
            if cls == 1 and len(data) >= 2 + self.O + self.L:  # contiguous
                a, size = self.addr(data, 2), self.length(data, 2 + self.O)
                if a is not None and 0 < size <= SMALL_DATA:
                    return [("data", a, size, dtype)]
                return []
            if cls == 3 and len(data) >= 2 + self.O + 4:  # virtual: the mapping is in a global heap
                a = self.addr(data, 2)
                return [("gcol", a)] if a is not None else []
            if cls == 2:  # chunked: HDF5 reads the chunk index's root when it opens the dataset
                a = self._chunk_index(data, version)
                if a is None:
                    return []
                if version == 3:  # a v1 B-tree: walk it (within CHUNK_INDEX_BYTES) so chunk lookups cost no request
                    return [("ctree", a, 8 + 8 * data[2])]
                return [("raw", a, WINDOW)]
            return []
        if version in (1, 2) and len(data) >= 8:
            ndims, cls = data[1], data[2]
            if cls == 1 and len(data) >= 8 + self.O:
                a = self.addr(data, 8)
                dims = [int.from_bytes(data[8 + self.O + 4 * i : 12 + self.O + 4 * i], "little") for i in range(ndims)]
                size = 1
                for d in dims:
                    size *= d
                if a is not None and 0 < size <= SMALL_DATA:
                    return [("data", a, size, dtype)]
        return []

    def _chunk_index(self, data: bytes, version: int) -> int | None:
        """The address of a chunked layout's index (v1 B-tree, or v4's single chunk/arrays/v2 B-tree)."""
        if version == 3:
            return self.addr(data, 3) if len(data) >= 3 + self.O else None
        flags, ndims, width = data[2], data[3], data[4]
        pos = 5 + ndims * width
        if len(data) <= pos:
            return None
        index_type = data[pos]
        pos += 1
        if index_type == 1:  # single chunk: (filtered size, filter mask) when filtered
            pos += (self.L + 4) if flags & 0x02 else 0
        elif index_type == 3:  # fixed array: page bits
            pos += 1
        elif index_type == 4:  # extensible array: five parameters
            pos += 5
        elif index_type == 5:  # v2 B-tree: node size (4), split and merge percents
            pos += 6
        return self.addr(data, pos) if len(data) >= pos + self.O else None

    def chunk_btree(self, at: int, key: int) -> list[tuple]:
        """A v1 B-tree node of a chunk index (keys of ``key`` bytes): its child nodes, not the chunks."""
        head = self.get(at, 8 + 2 * self.O)
        if head[:4] != b"TREE" or head[4] != 1:
            self.skip("chunk B-tree (bad signature)")
            return []
        level, used = head[5], int.from_bytes(head[6:8], "little")
        self.chunk_index_bytes += self.node_size(key)
        if level == 0:
            return []
        start = 8 + 2 * self.O
        step = key + self.O
        buf = self.get(at, start + used * step + key)
        if self.chunk_index_bytes > CHUNK_INDEX_BYTES:
            self.skip("chunk B-tree nodes past CHUNK_INDEX_BYTES")
            return []
        return [("ctree", a, key) for a in (self.addr(buf, start + i * step + key) for i in range(used)) if a is not None]

    def node_size(self, key: int) -> int:
        """Bytes of a chunk B-tree node as HDF5 reads it (2K + 1 keys and 2K children, K = istore_k)."""
        return 8 + 2 * self.O + (2 * self.istore_k + 1) * key + 2 * self.istore_k * self.O

    # -- groups, heaps --------------------------------------------------------- #
    def btree(self, at: int) -> list[tuple]:
        head = self.get(at, 8 + 2 * self.O)
        if head[:4] != b"TREE":
            self.skip("v1 B-tree (bad signature)")
            return []
        ntype, level, used = head[4], head[5], int.from_bytes(head[6:8], "little")
        if ntype != 0:
            return []  # a chunk index: read with the chunks
        start = 8 + 2 * self.O
        step = self.L + self.O
        buf = self.get(at, start + used * step + self.L)
        items = []
        for i in range(used):
            child = self.addr(buf, start + i * step + self.L)
            if child is not None:
                items.append(("btree" if level > 0 else "snod", child))
        return items

    def snod(self, at: int) -> list[tuple]:
        head = self.get(at, 8)
        if head[:4] != b"SNOD":
            self.skip("symbol table node (bad signature)")
            return []
        count = int.from_bytes(head[6:8], "little")
        entry = 2 * self.O + 24
        buf = self.get(at, 8 + count * entry)
        items = []
        for i in range(count):
            items += self.symbol_entry(buf, 8 + i * entry)
        return items

    def local_heap(self, at: int) -> list[tuple]:
        head = self.get(at, 8 + 2 * self.L + self.O)
        if head[:4] != b"HEAP":
            self.skip("local heap (bad signature)")
            return []
        size = self.length(head, 8)
        a = self.addr(head, 8 + 2 * self.L)
        return [("raw", a, size)] if a is not None and size else []

    def global_heap(self, at: int) -> list[tuple]:
        head = self.get(at, 8 + self.L)
        if head[:4] != b"GCOL":
            self.skip("global heap (bad signature)")
            return []
        size = self.length(head, 8)
        return [("raw", at, size)] if size > 8 + self.L else []

    def fractal_heap(self, at: int, what: str) -> list[tuple]:
        """A dense group's or attribute store's fractal heap: fetch its root direct block; follow links in it."""
        O, L = self.O, self.L
        pos = 14 + 10 * L + 2 * O  # -> table width (after the sizes and counts of the heap's objects)
        head = self.get(at, pos + 8 + 2 * L + O)
        if head[:4] != b"FRHP":
            self.skip("fractal heap (bad signature)")
            return []
        id_len, io_len, flags = struct.unpack_from("<HHB", head, 5)
        start_block = self.length(head, pos + 2)
        max_heap_bits = int.from_bytes(head[pos + 2 + 2 * L : pos + 4 + 2 * L], "little")
        root = self.addr(head, pos + 6 + 2 * L)
        rows = int.from_bytes(head[pos + 6 + 2 * L + O : pos + 8 + 2 * L + O], "little")
        if root is None:
            return []
        if io_len:  # filtered root block: its size and filter mask follow; rare, leave to h5py
            self.skip(f"filtered fractal heap ({what})")
            return []
        checksum = bool(flags & 0x02)
        items: list[tuple] = []
        huge = self.addr(head, 14 + L)  # objects too large for the heap's blocks are indexed by a v2 B-tree
        if huge is not None:
            items.append(("bthd", huge))
        if rows:
            width = int.from_bytes(head[pos : pos + 2], "little")
            max_direct = self.length(head, pos + 2 + L)
            return items + [("fhib", root, rows, width, start_block, max_direct, max_heap_bits, checksum, what)]
        return items + [("fhdb", root, start_block, max_heap_bits, checksum, what)]

    def v2_btree(self, at: int) -> list[tuple]:
        """A v2 B-tree (a dense group's or attribute store's name index, or a heap's huge objects): its root node.

        A root leaf of huge objects is parsed for the objects; other roots are fetched whole
        (h5py reads them to look names up); deeper nodes are left to h5py.
        """
        head = self.get(at, 16 + self.O + 2 + self.L + 4)
        if head[:4] != b"BTHD":
            self.skip("v2 B-tree (bad signature)")
            return []
        btype = head[5]
        node = int.from_bytes(head[6:10], "little")
        record = int.from_bytes(head[10:12], "little")
        depth = int.from_bytes(head[12:14], "little")
        root = self.addr(head, 16)
        count = int.from_bytes(head[16 + self.O : 18 + self.O], "little")
        if root is None or not count:
            return []
        if depth:
            self.skip("v2 B-tree nodes below the root")
        if btype in (1, 2, 3, 4) and not depth:
            return [("btlf", root, count, record)]
        return [("raw", root, node)]

    def huge_leaf(self, at: int, count: int, record: int) -> list[tuple]:
        buf = self.get(at, 6 + count * record + 4)
        if buf[:4] != b"BTLF":
            self.skip("v2 B-tree leaf (bad signature)")
            return []
        items = []
        for i in range(count):  # every huge-object record starts with (address, length)
            pos = 6 + i * record
            a = self.addr(buf, pos)
            if a is not None:
                items.append(("raw", a, self.length(buf, pos + self.O)))
        return items

    def indirect_block(self, at: int, rows: int, width: int, start_block: int, max_direct: int, heap_bits: int,
                       checksum: bool, what: str) -> list[tuple]:
        """A fractal heap's indirect block: its direct blocks (rows of ``width``, sizes doubling from row 2)."""
        direct_rows = max(max_direct.bit_length() - start_block.bit_length(), 0) + 2
        pos = 5 + self.O + (heap_bits + 7) // 8
        n_direct = min(rows, direct_rows) * width
        buf = self.get(at, pos + rows * width * self.O + 4)
        if buf[:4] != b"FHIB":
            self.skip("fractal heap indirect block (bad signature)")
            return []
        items = []
        for i in range(n_direct):
            a = self.addr(buf, pos + i * self.O)
            row = i // width
            size = start_block if row < 2 else start_block << (row - 1)
            if a is not None:
                items.append(("fhdb", a, size, heap_bits, checksum, what))
        if rows > direct_rows:
            self.skip(f"fractal heap with nested indirect blocks ({what})")
        return items

    def direct_block(self, at: int, size: int, heap_bits: int, checksum: bool, what: str) -> list[tuple]:
        buf = self.get(at, size)
        if buf[:4] != b"FHDB":
            self.skip("fractal heap direct block (bad signature)")
            return []
        pos = 5 + self.O + (heap_bits + 7) // 8 + (4 if checksum else 0)
        items: list[tuple] = []
        if what != "links":
            # Attribute messages back to back: their variable-length values' global heaps.
            while pos + 8 < size and buf[pos] in (1, 2, 3):
                n = self.attribute_length(buf, pos)
                if not n or pos + n > size:
                    break
                items += self.attribute(buf[pos : pos + n])
                pos += n
            return items
        # Link messages are stored back to back as heap objects; read them in order until one does
        # not parse (free space, or a layout this does not know: h5py reads the rest itself).
        while pos + 3 < size and buf[pos] == 1:
            ltype, nlen, p = self.link_header(buf, pos)
            if ltype == 0:
                a = self.addr(buf, p)
                if a is not None and a < self.size:
                    items.append(("oh", a))
                p += self.O
            elif ltype in (1, 64):
                p += 2 + int.from_bytes(buf[p : p + 2], "little")
            else:
                break
            if nlen == 0 or p > size:
                break
            pos = p
        return items

    # -- dispatch ------------------------------------------------------------- #
    def window(self, item: tuple) -> tuple[int, int]:
        """The absolute range to fetch for ``item`` before parsing it."""
        kind, at = item[0], item[1]
        if kind in ("raw", "data"):
            return at, min(item[2], self.size - at)
        if kind == "cont":
            return at, item[2]
        if kind == "fhdb":
            return at, min(item[2], self.size - at)
        if kind == "fhib":
            return at, min(5 + self.O + 16 + item[2] * item[3] * self.O + 4, self.size - at)
        if kind == "ctree":
            return at, min(self.node_size(item[2]), self.size - at)
        if kind == "btlf":
            return at, min(6 + item[2] * item[3] + 4, self.size - at)
        return at, WINDOW

    def parse(self, item: tuple) -> list[tuple]:
        kind = item[0]
        if kind == "super":
            return self.superblock(item[1])
        if kind == "oh":
            return self.object_header(item[1])
        if kind == "oh-ext":
            return self.object_header(item[1], extension=True)
        if kind == "cont":
            return self.continuation(item[1], item[2], item[3], item[4], item[5])
        if kind == "btree":
            return self.btree(item[1])
        if kind == "ctree":
            return self.chunk_btree(item[1], item[2])
        if kind == "snod":
            return self.snod(item[1])
        if kind == "lheap":
            return self.local_heap(item[1])
        if kind == "gcol":
            return self.global_heap(item[1])
        if kind == "frhp":
            return self.fractal_heap(item[1], item[2])
        if kind == "fhdb":
            return self.direct_block(*item[1:])
        if kind == "fhib":
            return self.indirect_block(*item[1:])
        if kind == "bthd":
            return self.v2_btree(item[1])
        if kind == "btlf":
            return self.huge_leaf(*item[1:])
        if kind == "data":
            _, at, size, dtype = item
            return self.values(dtype, self.get(at, size))
        if kind == "raw":
            self.get(item[1], min(item[2], self.size - item[1]))
            return []
        raise AssertionError(kind)


def find_superblock(peek, size: int) -> int | None:
    at = 0
    while at + 8 <= size:
        head = peek(at, 8)
        if head is None:
            return None
        if head == SIGNATURE:
            return at
        at = 512 if at == 0 else at * 2
    return None
