/*
 * ramlab test guest: a tiny 32-bit multiboot kernel (paging off) that dirties
 * memory in documented patterns, so migration captures have known content.
 *
 * Build (see ramlab.capture.build.build_guest, or python -m ramlab.capture.build):
 *     as --32 -o guest.o guest.S
 *     ld -m elf_i386 -T guest.ld --build-id=none -z noexecstack -o guest.elf guest.o
 *
 * Guest-physical layout (== pc.ram offsets: paging is off). Sizes are the
 * 64 MiB sizes; for RAM below 64 MiB each region size is shifted right by
 * `shift` (RAM 32 MiB -> 1, 16 MiB -> 2, ...), the random region by 2 * shift
 * (incompressible data: 32 KiB at 16 MiB keeps small captures small), rounded
 * down to 4 KiB and clipped to the end of RAM. The status page holds the
 * effective table, so readers never need to guess. 16 MiB layout: counter
 * 0x400000 1 MiB, random 0x800000 32 KiB, alternating 0xA00000 512 KiB,
 * 0xFF 0xC00000 256 KiB, data once 0xD00000 256 KiB.
 *
 *   status       0x300000  1 page   "RAMLAB01" at +0, pass counter (u32) at +8,
 *                                   LCG state at +0x0c, 1 at +0x10 once the
 *                                   one-time fills are done, RAM bytes at +0x14
 *                                   (multiboot mem_upper + 1 MiB, rounded up to MiB),
 *                                   shift at +0x18, then at +0x20 five
 *                                   (base, size) u32 pairs: counter, random,
 *                                   alternating, 0xFF, data-once
 *   counter      0x400000  4 MiB    filled once with a per-dword pattern
 *                                   (addr & 0x0ffff000) ^ 0xa0000000 ^ ((addr & 0x3c) >> 2);
 *                                   every pass increments the dword at +0x10 of each page
 *   random       0x800000  512 KiB  rewritten every pass with an LCG
 *                                   x = x * 1664525 + 1013904223 (seed 12345)
 *   alternating  0xA00000  2 MiB    odd passes: dword = (addr & 0x0ffff000) ^ 0xc0000000
 *                                   ^ (pass << 4) ^ ((addr & 0x3c) >> 2), even passes: all zero
 *   0xFF         0xC00000  1 MiB    written once: all 0xFF
 *   data once    0xD00000  1 MiB    written once: (addr & 0x0ffff000) ^ 0xe0000000 ^ ((addr & 0x3c) >> 2)
 *
 * Serial (COM1): "ramlab-guest: boot", "ramlab-guest: init done, dirtying",
 * then one '.' every 16 passes. A delay loop of DELAY iterations runs
 * between passes.
 *
 * TLB flushes: QEMU 7.2's TCG can miss dirty pages during migration (a dirty
 * bitmap sync that finds no *new* dirty page skips re-arming the TLB's
 * not-dirty trap, so later fast-path writes to pages still in the TLB are never
 * logged and the stream ends with stale pages). The guest therefore flushes
 * its whole TLB at the start of every pass (toggling CR4.PSE, harmless with
 * paging off) and drops the TLB entry of every page (invlpg) right before
 * writing to it, so each write re-enters QEMU's slow path when the page is
 * clean. On real hardware or KVM these instructions are just slow no-ops.
 */

        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0x00000003          /* page-align modules, want memory info */
        .set STATUS, 0x300000
        .set FULL_RAM, 0x4000000           /* sizes below are for 64 MiB and up */
        .set DELAY, 100000
        .set COM1, 0x3f8

        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)

        .section .text
        .code32
        .globl _start
_start:
        cli
        cld
        movl $stack_top, %esp

        /* RAM size from the multiboot info (flags bit 0: mem_upper valid) */
        movl $(16 << 20), %edx
        cmpl $0x2BADB002, %eax
        jne 1f
        testl $1, (%ebx)
        jz 1f
        movl 8(%ebx), %edx               /* mem_upper in KiB above 1 MiB */
        addl $1024, %edx
        shll $10, %edx
        addl $0xfffff, %edx              /* QEMU reports the top 128 KiB as used: */
        andl $0xfff00000, %edx           /* round up to whole MiB */
1:      movl %edx, STATUS + 0x14

        /* shift = number of halvings from 64 MiB down to RAM (0..8) */
        xorl %ecx, %ecx
2:      cmpl $FULL_RAM, %edx
        jae 3f
        cmpl $8, %ecx
        jae 3f
        shll $1, %edx
        incl %ecx
        jmp 2b
3:      movl %ecx, STATUS + 0x18
        movl $msg_boot, %esi
        call puts

        movl $0x4c4d4152, STATUS + 0     /* "RAML" */
        movl $0x31304241, STATUS + 4     /* "AB01" */
        movl $0, STATUS + 8
        movl $12345, STATUS + 0x0c
        movl $0, STATUS + 0x10

        /* effective region table: size = (size64 >> shift) & ~0xfff, clipped to RAM */
        movl $regions, %esi
        movl $(STATUS + 0x20), %edi
        movl $5, %ebp
4:      movl (%esi), %eax                /* base */
        movl 4(%esi), %edx               /* 64 MiB size */
        movl STATUS + 0x18, %ecx
        shrl %cl, %edx
        cmpl $4, %ebp                    /* ebp counts 5..1: 4 is the random region */
        jne 7f
        shrl %cl, %edx                   /* random: shifted twice */
7:      andl $0xfffff000, %edx
        movl STATUS + 0x14, %ecx         /* end of RAM */
        cmpl %ecx, %eax
        jb 5f
        xorl %edx, %edx                  /* region starts past RAM */
        jmp 6f
5:      subl %eax, %ecx                  /* room = ram - base */
        cmpl %ecx, %edx
        jbe 6f
        movl %ecx, %edx
6:      movl %eax, (%edi)
        movl %edx, 4(%edi)
        addl $8, %esi
        addl $8, %edi
        decl %ebp
        jnz 4b

        /* 0xFF region, written once */
        movl STATUS + 0x38, %edi
        movl STATUS + 0x3c, %ecx
        shrl $2, %ecx
        movl $0xffffffff, %eax
        rep stosl

        /* data-once region */
        movl STATUS + 0x40, %edi
        movl STATUS + 0x44, %ebp
        addl %edi, %ebp
        movl $0xe0000000, %ebx
        call fill_pattern

        /* counter region: initial per-dword pattern */
        movl STATUS + 0x20, %edi
        movl STATUS + 0x24, %ebp
        addl %edi, %ebp
        movl $0xa0000000, %ebx
        call fill_pattern

        movl $1, STATUS + 0x10
        movl $msg_init, %esi
        call puts

pass:
        movl %cr4, %eax                  /* full TLB flush: toggle CR4.PSE twice */
        xorl $0x10, %eax
        movl %eax, %cr4
        xorl $0x10, %eax
        movl %eax, %cr4
        incl STATUS + 8
        movl STATUS + 8, %ebx

        /* counter: +1 on the dword at +0x10 of every page */
        movl STATUS + 0x20, %edi
        movl STATUS + 0x24, %ebp
        addl %edi, %ebp
        jmp 2f
1:      invlpg (%edi)
        incl 0x10(%edi)
        addl $0x1000, %edi
2:      cmpl %ebp, %edi
        jb 1b

        /* random: LCG over the whole region */
        movl STATUS + 0x0c, %eax
        movl STATUS + 0x28, %edi
        movl STATUS + 0x2c, %ebp
        addl %edi, %ebp
        jmp 2f
1:      testl $0xfff, %edi
        jnz 7f
        invlpg (%edi)
7:      imull $1664525, %eax, %eax
        addl $1013904223, %eax
        movl %eax, (%edi)
        addl $4, %edi
2:      cmpl %ebp, %edi
        jb 1b
        invlpg STATUS
        movl %eax, STATUS + 0x0c

        /* alternating: data on odd passes, zero on even passes */
        movl STATUS + 0x30, %edi
        movl STATUS + 0x34, %ecx
        testl $1, %ebx
        jz 3f
        leal (%edi, %ecx), %ebp
        movl %ebx, %edx
        shll $4, %edx
        xorl $0xc0000000, %edx
        jmp 2f
1:      testl $0xfff, %edi
        jnz 7f
        invlpg (%edi)
7:      movl %edi, %eax
        andl $0x0ffff000, %eax
        xorl %edx, %eax
        movl %edi, %ecx
        andl $0x3c, %ecx
        shrl $2, %ecx
        xorl %ecx, %eax
        movl %eax, (%edi)
        addl $4, %edi
2:      cmpl %ebp, %edi
        jb 1b
        jmp 4f
3:      leal (%edi, %ecx), %ebp
        xorl %eax, %eax
        jmp 2f
1:      invlpg (%edi)
        movl $1024, %ecx
        rep stosl
2:      cmpl %ebp, %edi
        jb 1b
4:
        testl $0xf, %ebx
        jnz 5f
        invlpg -4(%esp)
        movb $'.', %al
        call putc
5:      movl $DELAY, %ecx
6:      decl %ecx
        jnz 6b
        jmp pass

/* fill [edi, ebp) with (addr & 0x0ffff000) ^ ebx ^ ((addr & 0x3c) >> 2) */
fill_pattern:
        jmp 2f
1:      movl %edi, %eax
        andl $0x0ffff000, %eax
        xorl %ebx, %eax
        movl %edi, %edx
        andl $0x3c, %edx
        shrl $2, %edx
        xorl %edx, %eax
        movl %eax, (%edi)
        addl $4, %edi
2:      cmpl %ebp, %edi
        jb 1b
        ret

putc:
        pushl %edx
        movw $COM1, %dx
        outb %al, %dx
        popl %edx
        ret

puts:
        lodsb
        testb %al, %al
        jz 1f
        call putc
        jmp puts
1:      ret

        .section .rodata
        .align 4
regions:
        .long 0x400000, 0x400000         /* counter */
        .long 0x800000, 0x080000         /* random */
        .long 0xA00000, 0x200000         /* alternating */
        .long 0xC00000, 0x100000         /* 0xFF */
        .long 0xD00000, 0x100000         /* data once */
msg_boot:
        .asciz "ramlab-guest: boot\n"
msg_init:
        .asciz "ramlab-guest: init done, dirtying\n"

        .section .bss
        .align 16
stack:
        .skip 4096
stack_top:

        .section .note.GNU-stack, "", @progbits
