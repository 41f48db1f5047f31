/*
 * uart.h on the nRF52840's UARTE0 (EasyDMA UART), register level (nRF52840 Product
 * Specification, UARTE chapter). On the nRF52840-DK the J-Link virtual COM port is TXD P0.06,
 * RXD P0.08 (uart_config.h may override MDY_UART_TX_PIN / MDY_UART_RX_PIN). EasyDMA reads and
 * writes RAM only, so bytes go through small RAM buffers; reception is one byte per DMA
 * transfer, restarted at once (the UARTE's RX FIFO holds the bytes that arrive meanwhile).
 */
#include "uart.h"

#include "cycles.h"
#include "uart_config.h"

#define UARTE_BASE 0x40002000u
#define REG(offset) (*(volatile uint32_t *)(UARTE_BASE + (offset)))
#define TASKS_STARTRX REG(0x000u)
#define TASKS_STARTTX REG(0x008u)
#define EVENTS_ENDRX REG(0x110u)
#define EVENTS_ENDTX REG(0x120u)
#define ENABLE REG(0x500u)
#define PSEL_RTS REG(0x508u)
#define PSEL_TXD REG(0x50Cu)
#define PSEL_CTS REG(0x510u)
#define PSEL_RXD REG(0x514u)
#define BAUDRATE REG(0x524u)
#define RXD_PTR REG(0x534u)
#define RXD_MAXCNT REG(0x538u)
#define TXD_PTR REG(0x544u)
#define TXD_MAXCNT REG(0x548u)
#define CONFIG REG(0x56Cu)

#define ENABLE_UARTE 8u
#define PSEL_DISCONNECTED 0x80000000u
#ifndef MDY_UART_TX_PIN
#define MDY_UART_TX_PIN 6u
#endif
#ifndef MDY_UART_RX_PIN
#define MDY_UART_RX_PIN 8u
#endif

static volatile uint8_t rx_byte;
static uint8_t tx_chunk[32];

static uint32_t baud_register(uint32_t baud)
{
    switch (baud) { /* the values the product specification lists */
    case 9600u: return 0x00275000u;
    case 19200u: return 0x004EA000u;
    case 38400u: return 0x009D5000u;
    case 57600u: return 0x00EB0000u;
    case 230400u: return 0x03AFB000u;
    case 460800u: return 0x075F7000u;
    case 921600u: return 0x0EBED000u;
    case 1000000u: return 0x10000000u;
    default: return 0x01D7E000u; /* 115200 */
    }
}

static void start_receive(void)
{
    EVENTS_ENDRX = 0;
    RXD_PTR = (uint32_t)(uintptr_t)&rx_byte;
    RXD_MAXCNT = 1;
    TASKS_STARTRX = 1;
}

int mdy_uart_init(void)
{
    ENABLE = 0;
    PSEL_TXD = MDY_UART_TX_PIN;
    PSEL_RXD = MDY_UART_RX_PIN;
    PSEL_RTS = PSEL_DISCONNECTED;
    PSEL_CTS = PSEL_DISCONNECTED;
    BAUDRATE = baud_register(MDY_UART_BAUD);
    CONFIG = 0; /* no parity, no flow control, one stop bit */
    ENABLE = ENABLE_UARTE;
    start_receive();
    return 0;
}

int mdy_uart_read(void)
{
    uint8_t byte;
    uint64_t start = mdy_cycles_now();
    while (EVENTS_ENDRX == 0u) {
        if (mdy_cycles_now() - start >= MDY_UART_IDLE_CYCLES) {
            return MDY_UART_IDLE;
        }
    }
    byte = rx_byte;
    start_receive();
    return byte;
}

void mdy_uart_write(const uint8_t *data, uint32_t length)
{
    while (length > 0u) {
        uint32_t n = length < sizeof tx_chunk ? length : (uint32_t)sizeof tx_chunk, i;
        for (i = 0; i < n; ++i) {
            tx_chunk[i] = data[i];
        }
        EVENTS_ENDTX = 0;
        TXD_PTR = (uint32_t)(uintptr_t)tx_chunk;
        TXD_MAXCNT = n;
        TASKS_STARTTX = 1;
        while (EVENTS_ENDTX == 0u) {
        }
        data += n;
        length -= n;
    }
}
