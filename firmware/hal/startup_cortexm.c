/*
 * Cortex-M start-up for medyate-mcu firmware, written for this project (C99 + GCC attributes).
 *
 * Reset: enable the FPU (CPACR: CP10 and CP11 full access) before any floating-point instruction,
 * copy .data from flash, zero .bss, paint the stack with a pattern (to measure its high-water
 * mark), call main, then mdy_exit(status). Every fault (HardFault, MemManage, BusFault,
 * UsageFault, NMI, an unexpected interrupt) prints the stacked registers and the fault status
 * registers over semihosting and exits with status MDY_FAULT_EXIT_STATUS.
 */
#include "startup_cortexm.h"

#include <errno.h>
#include <stddef.h>

#include "semihosting.h"

#define MDY_FAULT_EXIT_STATUS 3
#define STACK_PAINT 0xC5C5C5C5u

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define SCB_MMFAR (*(volatile uint32_t *)0xE000ED34u)
#define SCB_BFAR (*(volatile uint32_t *)0xE000ED38u)
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)

/* From the linker script. */
extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end;
extern uint32_t __stack_limit, __stack_top;

int main(void);
void Reset_Handler(void) __attribute__((noreturn));
void mdy_fault_handler(void);
void mdy_fault_report(const uint32_t *frame, uint32_t exc_return);
void SysTick_Handler(void) __attribute__((weak, alias("mdy_fault_handler")));
void SVC_Handler(void) __attribute__((weak, alias("mdy_fault_handler")));
void PendSV_Handler(void) __attribute__((weak, alias("mdy_fault_handler")));

typedef void (*mdy_vector_t)(void);

/* The core's 16 entries; a board HAL may append its peripheral interrupts in the input section
 * .isr_vector.irq (the linker script places it right after this table). */
__attribute__((section(".isr_vector"), used)) const mdy_vector_t mdy_core_vectors[16] = {
    (mdy_vector_t)(uintptr_t)&__stack_top, /* initial main stack pointer */
    Reset_Handler,
    mdy_fault_handler, /* NMI */
    mdy_fault_handler, /* HardFault */
    mdy_fault_handler, /* MemManage */
    mdy_fault_handler, /* BusFault */
    mdy_fault_handler, /* UsageFault */
    NULL, NULL, NULL, NULL,
    SVC_Handler,
    mdy_fault_handler, /* DebugMonitor */
    NULL,
    PendSV_Handler,
    SysTick_Handler,
};

void Reset_Handler(void)
{
    uint32_t *dst;
    const uint32_t *src;
    volatile uint32_t *paint;
    uint32_t sp;

    SCB_CPACR |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" : : : "memory");
    for (src = &__data_load, dst = &__data_start; dst < &__data_end;) {
        *dst++ = *src++;
    }
    for (dst = &__bss_start; dst < &__bss_end;) {
        *dst++ = 0u;
    }
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (paint = &__stack_limit; (uintptr_t)paint < sp - 64u; ++paint) {
        *paint = STACK_PAINT;
    }
    mdy_exit(main());
}

__attribute__((weak)) void mdy_exit(int status)
{
    mdy_semi_exit(status);
}

uint32_t mdy_stack_reserved(void)
{
    return (uint32_t)((uintptr_t)&__stack_top - (uintptr_t)&__stack_limit);
}

uint32_t mdy_stack_untouched(void)
{
    const volatile uint32_t *word = &__stack_limit;
    while (word < &__stack_top && *word == STACK_PAINT) {
        ++word;
    }
    return (uint32_t)((uintptr_t)word - (uintptr_t)&__stack_limit);
}

/* Every fault: pass the stacked frame (MSP or PSP, from EXC_RETURN bit 2) to the reporter. */
__attribute__((naked)) void mdy_fault_handler(void)
{
    __asm__ volatile("tst lr, #4\n\t"
                     "ite eq\n\t"
                     "mrseq r0, msp\n\t"
                     "mrsne r0, psp\n\t"
                     "mov r1, lr\n\t"
                     "b mdy_fault_report\n\t");
}

static void put_hex(char *out, uint32_t value)
{
    int i;
    for (i = 7; i >= 0; --i) {
        uint32_t digit = value & 0xFu;
        out[i] = (char)(digit < 10u ? '0' + digit : 'a' + digit - 10u);
        value >>= 4;
    }
}

static void put_register(const char *name, uint32_t value)
{
    char line[24];
    size_t n = 0;
    while (name[n] != '\0' && n < 8u) {
        line[n] = name[n];
        ++n;
    }
    line[n++] = '=';
    line[n++] = '0';
    line[n++] = 'x';
    put_hex(line + n, value);
    n += 8u;
    line[n++] = ' ';
    line[n] = '\0';
    mdy_semi_write0(line);
}

void mdy_fault_report(const uint32_t *frame, uint32_t exc_return)
{
    static const char *const names[8] = {"r0", "r1", "r2", "r3", "r12", "lr", "pc", "xpsr"};
    int i;
    mdy_semi_write0("\nHARD FAULT (exception ");
    put_register("number", SCB_ICSR & 0x1FFu);
    mdy_semi_write0(")\n");
    for (i = 0; i < 8; ++i) {
        put_register(names[i], frame[i]);
    }
    mdy_semi_write0("\n");
    put_register("sp", (uint32_t)(uintptr_t)frame);
    put_register("exc_ret", exc_return);
    put_register("CFSR", SCB_CFSR);
    put_register("HFSR", SCB_HFSR);
    put_register("MMFAR", SCB_MMFAR);
    put_register("BFAR", SCB_BFAR);
    mdy_semi_write0("\n");
    mdy_semi_exit(MDY_FAULT_EXIT_STATUS);
}

/* newlib hooks. The firmware has no heap: an allocation inside the C library fails cleanly. */
void *_sbrk(ptrdiff_t increment);
void *_sbrk(ptrdiff_t increment)
{
    (void)increment;
    errno = ENOMEM;
    return (void *)-1;
}

void _exit(int status);
void _exit(int status)
{
    mdy_exit(status);
}
