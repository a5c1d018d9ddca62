"""Wire constants of QEMU's migration stream, under QEMU's own names.

Values from ``migration/ram.c``, ``migration/savevm.c``, ``migration/multifd.h`` and
``migration/migration.c``; see ``docs/reference/stream-format.md`` for their history.

    >>> hex(RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE)
    '0x22'
"""

from __future__ import annotations

# --- savevm framing -----------------------------------------------------------------
QEMU_VM_FILE_MAGIC = 0x5145564D  # "QEVM"
QEMU_VM_FILE_VERSION_COMPAT = 0x00000002
QEMU_VM_FILE_VERSION = 0x00000003

QEMU_VM_EOF = 0x00
QEMU_VM_SECTION_START = 0x01
QEMU_VM_SECTION_PART = 0x02
QEMU_VM_SECTION_END = 0x03
QEMU_VM_SECTION_FULL = 0x04
QEMU_VM_SUBSECTION = 0x05
QEMU_VM_VMDESCRIPTION = 0x06
QEMU_VM_CONFIGURATION = 0x07
QEMU_VM_COMMAND = 0x08
QEMU_VM_SECTION_FOOTER = 0x7E

SECTION_TYPE_NAMES = {
    QEMU_VM_SECTION_START: "START",
    QEMU_VM_SECTION_PART: "PART",
    QEMU_VM_SECTION_END: "END",
    QEMU_VM_SECTION_FULL: "FULL",
}

# --- QEMU_VM_COMMAND sub-commands (enum qemu_vm_cmd) ----------------------------------
MIG_CMD_OPEN_RETURN_PATH = 1
MIG_CMD_PING = 2
MIG_CMD_POSTCOPY_ADVISE = 3
MIG_CMD_POSTCOPY_LISTEN = 4
MIG_CMD_POSTCOPY_RUN = 5
MIG_CMD_POSTCOPY_RAM_DISCARD = 6
MIG_CMD_PACKAGED = 7
MIG_CMD_ENABLE_COLO = 8
MIG_CMD_POSTCOPY_RESUME = 9
MIG_CMD_RECV_BITMAP = 10
MIG_CMD_SWITCHOVER_START = 11  # QEMU >= 10.0
MIG_CMD_MAX = 12

MIG_CMD_NAMES = {
    MIG_CMD_OPEN_RETURN_PATH: "OPEN_RETURN_PATH",
    MIG_CMD_PING: "PING",
    MIG_CMD_POSTCOPY_ADVISE: "POSTCOPY_ADVISE",
    MIG_CMD_POSTCOPY_LISTEN: "POSTCOPY_LISTEN",
    MIG_CMD_POSTCOPY_RUN: "POSTCOPY_RUN",
    MIG_CMD_POSTCOPY_RAM_DISCARD: "POSTCOPY_RAM_DISCARD",
    MIG_CMD_PACKAGED: "PACKAGED",
    MIG_CMD_ENABLE_COLO: "ENABLE_COLO",
    MIG_CMD_POSTCOPY_RESUME: "POSTCOPY_RESUME",
    MIG_CMD_RECV_BITMAP: "RECV_BITMAP",
    MIG_CMD_SWITCHOVER_START: "SWITCHOVER_START",
}

# Fixed payload lengths checked by the loader (-1: variable, checked by the handler).
MIG_CMD_ARGS_LEN = {
    MIG_CMD_OPEN_RETURN_PATH: 0,
    MIG_CMD_PING: 4,
    MIG_CMD_POSTCOPY_ADVISE: -1,
    MIG_CMD_POSTCOPY_LISTEN: 0,
    MIG_CMD_POSTCOPY_RUN: 0,
    MIG_CMD_POSTCOPY_RAM_DISCARD: -1,
    MIG_CMD_PACKAGED: 4,
    MIG_CMD_ENABLE_COLO: 0,
    MIG_CMD_POSTCOPY_RESUME: 0,
    MIG_CMD_RECV_BITMAP: -1,
    MIG_CMD_SWITCHOVER_START: 0,
}

MAX_VM_CMD_PACKAGED_SIZE = 0xFFFFFFFF  # 7.2 (early QEMU: 1 << 24)
POSTCOPY_RAM_DISCARD_VERSION = 0
MAX_DISCARDS_PER_COMMAND = 12

# --- return path (enum mig_rp_message_type) -------------------------------------------
MIG_RP_MSG_SHUT = 1
MIG_RP_MSG_PONG = 2
MIG_RP_MSG_REQ_PAGES_ID = 3
MIG_RP_MSG_REQ_PAGES = 4
MIG_RP_MSG_RECV_BITMAP = 5
MIG_RP_MSG_RESUME_ACK = 6
MIG_RP_MSG_SWITCHOVER_ACK = 7  # QEMU >= 8.1
MIG_RP_MSG_MAX = 8

# --- RAM section record flags (migration/ram.c) ---------------------------------------
RAM_SAVE_FLAG_FULL = 0x01  # obsolete
RAM_SAVE_FLAG_ZERO = 0x02  # formerly RAM_SAVE_FLAG_COMPRESS
RAM_SAVE_FLAG_MEM_SIZE = 0x04
RAM_SAVE_FLAG_PAGE = 0x08
RAM_SAVE_FLAG_EOS = 0x10
RAM_SAVE_FLAG_CONTINUE = 0x20
RAM_SAVE_FLAG_XBZRLE = 0x40
RAM_SAVE_FLAG_HOOK = 0x80  # RDMA
RAM_SAVE_FLAG_COMPRESS_PAGE = 0x100  # removed in QEMU 9.1
RAM_SAVE_FLAG_MULTIFD_FLUSH = 0x200  # QEMU >= 8.1

ENCODING_FLAG_XBZRLE = 0x1
RAM_SECTION_VERSION = 4
RAMBLOCK_RECV_BITMAP_ENDING = 0x0123456789ABCDEF

TARGET_PAGE_SIZE = 4096


def compress_bound(n: int) -> int:
    """zlib's ``compressBound(n)``: the largest COMPRESS_PAGE payload QEMU accepts.

    >>> compress_bound(4096)
    4110
    """
    return n + (n >> 12) + (n >> 14) + (n >> 25) + 13


# --- multifd (migration/multifd.h) ----------------------------------------------------
MULTIFD_MAGIC = 0x11223344
MULTIFD_VERSION = 1
MULTIFD_FLAG_SYNC = 1 << 0
MULTIFD_FLAG_COMPRESSION_MASK_72 = 0x7 << 1  # bits 1-3 (7.2)
MULTIFD_FLAG_COMPRESSION_MASK_90 = 0x1F << 1  # bits 1-5 (>= 9.0: qpl, uadk, qatzip)
MULTIFD_FLAG_NOCOMP = 0 << 1
MULTIFD_FLAG_ZLIB = 1 << 1
MULTIFD_FLAG_ZSTD = 2 << 1
MULTIFD_FLAG_DEVICE_STATE = 1 << 6  # QEMU >= 10.0
MULTIFD_PACKET_SIZE = 512 * 1024
MULTIFD_INIT_SIZE = 64
MULTIFD_INIT_SIZE_SEED = 25  # QEMU 2.11-3.0: packed magic, version, uuid[16], id; no padding

# --- mapped-ram (QEMU >= 9.0) ---------------------------------------------------------
MAPPED_RAM_HDR_VERSION = 1
