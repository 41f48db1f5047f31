#include "cycles.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_ENABLE 1u
#define SYST_TICKINT 2u
#define SYST_CLKSOURCE 4u
#define SYST_RELOAD 0x00FFFFFFu
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)
#define ICSR_PENDSTCLR (1u << 25)

static volatile uint32_t wraps;

/* The vector table's SysTick entry (startup_cortexm.c declares it weak). */
void SysTick_Handler(void)
{
    ++wraps;
}

void mdy_cycles_start(void)
{
    uint32_t primask;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask) : : "memory");
    SYST_CSR = 0u;
    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0u; /* any write clears it: the count restarts from the reload value */
    SYST_CSR = SYST_ENABLE | SYST_TICKINT | SYST_CLKSOURCE;
    /* A counter enabled at 0 may raise the interrupt once while loading the reload value (QEMU
     * does): wait for the reload, then drop that interrupt before counting wraps. */
    while (SYST_CVR == 0u) {
    }
    SCB_ICSR = ICSR_PENDSTCLR;
    wraps = 0u;
    __asm__ volatile("msr primask, %0" : : "r"(primask) : "memory");
}

uint64_t mdy_cycles_now(void)
{
    uint32_t primask, count, value;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask) : : "memory");
    count = wraps;
    value = SYST_CVR;
    if ((SCB_ICSR & ICSR_PENDSTSET) != 0u) { /* wrapped, interrupt not taken yet */
        ++count;
        value = SYST_CVR;
    }
    __asm__ volatile("msr primask, %0" : : "r"(primask) : "memory");
    return ((uint64_t)count << 24) + (uint64_t)(SYST_RELOAD - (value & SYST_RELOAD));
}
