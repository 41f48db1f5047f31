/*
 * Cortex-M start-up (startup_cortexm.c): vector table, .data/.bss initialisation, FPU enable,
 * stack painting, fault reporting. The linker script (linker.ld, generated from the board file)
 * provides the symbols it uses.
 */
#ifndef MDY_STARTUP_CORTEXM_H
#define MDY_STARTUP_CORTEXM_H

#include <stdint.h>

/* Bytes of the reserved stack never written since reset (the stack is painted at reset). */
uint32_t mdy_stack_untouched(void);
/* Bytes reserved for the stack by the linker script. */
uint32_t mdy_stack_reserved(void);
/* Called when main returns, with its value. Default (weak): semihosting exit with that status. */
void mdy_exit(int status) __attribute__((noreturn));

#endif /* MDY_STARTUP_CORTEXM_H */
