"""The kernel "build tree" BCC compiles against, made from ``linux-libc-dev`` uapi headers.

BCC insists on a kernel build directory (``/lib/modules/$(uname -r)/build`` or
``BCC_KERNEL_SOURCE``). Hosts like ours have no kernel headers at all, and Debian's split
``linux-headers`` packages do not form a single tree either. NovaNet's programs only use uapi
types, so a small tree of symlinks into ``/usr/include`` plus a few stub headers is enough (and
compiles faster than a real tree). This is the Python equivalent of ``make_fake_ktree.sh`` in the
machine feasibility report §1.4. The tree is rebuilt when the recipe or the kernel release changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

UAPI = "/usr/include/linux"
ARCH_ASM = "/usr/include/x86_64-linux-gnu/asm"
ASM_GENERIC = "/usr/include/asm-generic"

# Headers also reachable as <linux/...> (not only <uapi/linux/...>).
_LINUX_ALIASES = ("bpf_common.h", "if_ether.h", "if_packet.h", "if_arp.h", "ip.h", "in.h", "in6.h",
                  "pkt_cls.h", "tcp.h", "udp.h", "icmp.h", "const.h", "posix_types.h", "stddef.h",
                  "swab.h", "byteorder")

_AUTOCONF = """\
#define CONFIG_BPF_SYSCALL 1
#define CONFIG_NET 1
/* uapi headers leave these to libc; BCC programs need them as builtins (an implicit
   declaration would compile to a call and fail to load with "jump out of range"). */
#define htons(x) __builtin_bswap16(x)
#define ntohs(x) __builtin_bswap16(x)
#define htonl(x) __builtin_bswap32(x)
#define ntohl(x) __builtin_bswap32(x)
"""

_TYPES = """\
#pragma once
#include <uapi/linux/types.h>
typedef __u8 u8; typedef __s8 s8; typedef __u16 u16; typedef __s16 s16;
typedef __u32 u32; typedef __s32 s32; typedef __u64 u64; typedef __s64 s64;
typedef __kernel_size_t size_t; typedef __kernel_ssize_t ssize_t; typedef unsigned long uintptr_t;
#ifndef __cplusplus
typedef _Bool bool;
#define true 1
#define false 0
#endif
"""

RECIPE_VERSION = 1
STAMP = ".novanet-ktree"


class HeaderTreeError(RuntimeError):
    pass


def _version_code(release: str) -> int:
    parts = (release.split("-", 1)[0].split(".") + ["0", "0"])[:3]
    nums = []
    for p in parts:
        digits = "".join(c for c in p if c.isdigit())
        nums.append(int(digits or 0))
    a, b, c = nums
    return (a << 16) + (b << 8) + min(c, 255)


def _stamp_text() -> str:
    rel = os.uname().release
    h = hashlib.sha256(f"{RECIPE_VERSION}|{rel}|{_AUTOCONF}|{_TYPES}|{sorted(os.listdir(UAPI))}".encode())
    return h.hexdigest()


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _build(dst: str) -> None:
    inc = os.path.join(dst, "include")
    uapi_linux = os.path.join(inc, "uapi", "linux")
    os.makedirs(uapi_linux)
    for name in os.listdir(UAPI):
        os.symlink(os.path.join(UAPI, name), os.path.join(uapi_linux, name))
    # BCC ships its own bpf.h as <bcc/bpf.h>; the installed uapi one uses a different include
    # guard, so including both gives redefinition errors. Route uapi/linux/bpf.h to BCC's.
    os.unlink(os.path.join(uapi_linux, "bpf.h"))
    _write(os.path.join(uapi_linux, "bpf.h"), "#pragma once\n#include <bcc/bpf.h>\n")
    os.symlink(ARCH_ASM, os.path.join(inc, "uapi", "asm"))
    os.symlink(ASM_GENERIC, os.path.join(inc, "uapi", "asm-generic"))
    os.symlink(ASM_GENERIC, os.path.join(inc, "asm-generic"))
    os.makedirs(os.path.join(dst, "arch", "x86", "include", "uapi"))
    os.symlink(ARCH_ASM, os.path.join(dst, "arch", "x86", "include", "uapi", "asm"))
    linux = os.path.join(inc, "linux")
    os.makedirs(linux)
    for h in _LINUX_ALIASES:
        if os.path.exists(os.path.join(UAPI, h)):
            os.symlink(os.path.join(UAPI, h), os.path.join(linux, h))
    _write(os.path.join(linux, "kconfig.h"), "#include <generated/autoconf.h>\n")
    _write(os.path.join(inc, "generated", "autoconf.h"), _AUTOCONF)
    _write(os.path.join(linux, "types.h"), _TYPES)
    code = _version_code(os.uname().release)
    _write(os.path.join(linux, "version.h"),
           f"#define LINUX_VERSION_CODE {code}\n"
           "#define KERNEL_VERSION(a,b,c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n")
    _write(os.path.join(linux, "log2.h"), "#pragma once\n")
    _write(os.path.join(inc, "asm", "page.h"), "#pragma once\n#define PAGE_SIZE 4096\n#define PAGE_SHIFT 12\n")


def ensure(path: str) -> str:
    """Build the tree at ``path`` unless an up-to-date one is there; return ``path``.

    Built in a sibling temp dir and renamed into place, so concurrent callers never see half a tree.
    """
    if not os.path.isdir(UAPI) or not os.path.isdir(ARCH_ASM):
        raise HeaderTreeError(f"bpf.headerTree: {UAPI} or {ARCH_ASM} missing; install linux-libc-dev")
    want = _stamp_text()
    try:
        with open(os.path.join(path, STAMP)) as f:
            if f.read() == want:
                return path
    except OSError:
        pass
    parent = os.path.dirname(os.path.abspath(path)) or "/"
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".ktree-", dir=parent)
    except OSError as e:
        raise HeaderTreeError(f"bpf.headerTree: cannot create {path}: {e}") from None
    tree = os.path.join(tmp, "t")
    _build(tree)
    _write(os.path.join(tree, STAMP), want)
    old = None
    if os.path.exists(path):
        old = path + f".old-{os.getpid()}"
        os.rename(path, old)
    os.rename(tree, path)
    shutil.rmtree(tmp, ignore_errors=True)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    return path


def activate(path: str) -> str:
    """Ensure the tree and point BCC at it (BCC reads the variable at compile time)."""
    ensure(path)
    os.environ["BCC_KERNEL_SOURCE"] = path
    return path
