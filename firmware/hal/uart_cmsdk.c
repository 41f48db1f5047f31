/*
 * uart.h on the Arm CMSDK APB UART, as QEMU's mps2-an385/an386/an500/an505 machines have it
 * (UART0 at 0x40004000; Cortex-M System Design Kit TRM, DDI0479). Registers: DATA 0x00,
 * STATE 0x04 (bit 0 TX buffer full, bit 1 RX buffer full), CTRL 0x08 (bit 0 TX enable, bit 1
 * RX enable), BAUDDIV 0x10 (peripheral clock / baud, at least 16).
 * QEMU holds back further input while the one-byte RX buffer is full, so polling loses nothing.
 * Checked against QEMU's model (hw/char/cmsdk-apb-uart.c; `medyate-mcu simulate --serial`):
 * reading DATA clears RX full; a BAUDDIV below 16 or above the peripheral clock (25 MHz on the
 * mps2 machines: 217 for 115200 baud) is ignored, and enabling TX before a valid BAUDDIV is
 * logged as a guest error, hence BAUDDIV first; with no host connected QEMU drops what is
 * sent, so a write never blocks. The overrun bits stay clear and are not read.
 */
#include "uart.h"

#include "cycles.h"
#include "uart_config.h"

#ifndef MDY_UART_CMSDK_BASE
#define MDY_UART_CMSDK_BASE 0x40004000u /* UART0 */
#endif

#define UART_REG(offset) (*(volatile uint32_t *)(MDY_UART_CMSDK_BASE + (offset)))
#define UART_DATA UART_REG(0x00u)
#define UART_STATE UART_REG(0x04u)
#define UART_CTRL UART_REG(0x08u)
#define UART_BAUDDIV UART_REG(0x10u)

#define STATE_TX_FULL 0x1u
#define STATE_RX_FULL 0x2u

int mdy_uart_init(void)
{
    uint32_t divider = MDY_UART_CLOCK_HZ / MDY_UART_BAUD;
    UART_BAUDDIV = divider < 16u ? 16u : divider;
    UART_CTRL = 0x3u; /* TX and RX enabled, no interrupts */
    return 0;
}

int mdy_uart_read(void)
{
    uint64_t start = mdy_cycles_now();
    while ((UART_STATE & STATE_RX_FULL) == 0u) {
        if (mdy_cycles_now() - start >= MDY_UART_IDLE_CYCLES) {
            return MDY_UART_IDLE;
        }
    }
    return (int)(UART_DATA & 0xFFu);
}

void mdy_uart_write(const uint8_t *data, uint32_t length)
{
    uint32_t i;
    for (i = 0; i < length; ++i) {
        while (UART_STATE & STATE_TX_FULL) {
        }
        UART_DATA = data[i];
    }
}
