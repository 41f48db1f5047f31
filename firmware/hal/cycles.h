/*
 * A 64-bit cycle counter from SysTick: the core clock (CLKSOURCE = processor clock) counting
 * down from 2^24 - 1, each wrap counted by the SysTick interrupt. Works on every Cortex-M and
 * under QEMU, which does not model the DWT cycle counter. Under QEMU with `-icount shift=0` one
 * instruction takes 1 ns of virtual time, so instructions = cycles * 1e9 / MDY_CPU_HZ
 * (QEMU's SysTick clock for the machine; the board file's clock_hz).
 */
#ifndef MDY_CYCLES_H
#define MDY_CYCLES_H

#include <stdint.h>

/* Starts (or restarts from 0) the counter and enables its interrupt. */
void mdy_cycles_start(void);
/* Core clock cycles since mdy_cycles_start. */
uint64_t mdy_cycles_now(void);

#endif /* MDY_CYCLES_H */
