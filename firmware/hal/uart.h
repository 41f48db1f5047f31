/*
 * The serial port the device loop talks through (one per build, chosen by the linked file):
 *   uart_host.c    the host build: a TCP socket on 127.0.0.1 (MDY_UART=tcp:PORT) or stdin/stdout
 *   uart_cmsdk.c   the CMSDK APB UART of QEMU's mps2-an386 / mps2-an500 (UART0 at 0x40004000)
 *   uart_stm32.c   an STM32F4/F7 USART, register level
 *   uart_nrf52.c   the nRF52 UARTE0, register level
 * 8 data bits, no parity, 1 stop bit, no flow control. Blocking, polled: no interrupts.
 *
 * Idle timeout: a read that waits MDY_UART_IDLE_MS with no byte returns MDY_UART_IDLE, so the
 * protocol drops a frame whose sender stopped half-way (a host interrupted or unplugged); the
 * host (medyate_mcu/device/link.py) stays silent for longer than this before its HELLO. The
 * Cortex-M drivers time it with the SysTick cycle counter (cycles.h, started by the application:
 * serial_main.c does) at MDY_UART_CORE_HZ, the core clock uart_config.h names; without a running
 * counter they never time out. The host build times it with poll(), and a new connection also
 * counts as idle (what the last host left half-sent is void).
 * The generated uart_config.h names the board's port, baud rate and peripheral clock
 * (MDY_UART_BAUD, MDY_UART_CLOCK_HZ, MDY_UART_<PERIPHERAL>).
 */
#ifndef MDY_UART_H
#define MDY_UART_H

#include <stdint.h>

#define MDY_UART_IDLE_MS 250u
#define MDY_UART_IDLE (-2)
/* SysTick cycles of the idle timeout (Cortex-M drivers). */
#define MDY_UART_IDLE_CYCLES ((uint64_t)MDY_UART_CORE_HZ / 1000u * MDY_UART_IDLE_MS)

/* Enable the port. Returns 0, or -1 when the port cannot be opened (host build). */
int mdy_uart_init(void);
/* The next received byte (0..255), waiting for it; MDY_UART_IDLE after MDY_UART_IDLE_MS without
 * one; -1 when the stream has ended (host only). */
int mdy_uart_read(void);
/* Send `length` bytes, waiting until the hardware has taken them all. */
void mdy_uart_write(const uint8_t *data, uint32_t length);

#endif /* MDY_UART_H */
