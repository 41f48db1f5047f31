/*
 * uart.h on an STM32F4 or STM32F7 USART, register level (no vendor HAL).
 *
 * uart_config.h picks the port: MDY_UART_USART1 (TX PA9, RX PA10 on F4; RX PB7 on the
 * STM32F746G-DISCO, whose ST-LINK virtual COM port uses PA9/PB7) or MDY_UART_USART2 (TX PA2,
 * RX PA3: the NUCLEO-F411RE's virtual COM port), and the register layout: MDY_UART_STM32F7
 * for the F7's USART (ISR/RDR/TDR), otherwise the F4's (SR/DR). MDY_UART_CLOCK_HZ is the
 * USART's bus clock; after reset both families run from the 16 MHz HSI with no bus dividers.
 * References: RM0383 (STM32F411), RM0090 (STM32F405), RM0385 (STM32F746).
 */
#include "uart.h"

#include "cycles.h"
#include "uart_config.h"

#define REG(address) (*(volatile uint32_t *)(address))

#define RCC_BASE 0x40023800u
#define RCC_AHB1ENR REG(RCC_BASE + 0x30u)
#define RCC_APB1ENR REG(RCC_BASE + 0x40u)
#define RCC_APB2ENR REG(RCC_BASE + 0x44u)
#define GPIOA_BASE 0x40020000u
#define GPIOB_BASE 0x40020400u
#define GPIO_MODER(port) REG((port) + 0x00u)
#define GPIO_AFRL(port) REG((port) + 0x20u)
#define GPIO_AFRH(port) REG((port) + 0x24u)

#if defined(MDY_UART_USART2)
#define USART_BASE 0x40004400u
#define TX_PORT GPIOA_BASE
#define TX_PIN 2u
#define RX_PORT GPIOA_BASE
#define RX_PIN 3u
#define ENABLE_CLOCKS() (RCC_AHB1ENR |= 1u, RCC_APB1ENR |= 1u << 17)
#elif defined(MDY_UART_USART1)
#define USART_BASE 0x40011000u
#define TX_PORT GPIOA_BASE
#define TX_PIN 9u
#if defined(MDY_UART_STM32F7)
#define RX_PORT GPIOB_BASE
#define RX_PIN 7u
#else
#define RX_PORT GPIOA_BASE
#define RX_PIN 10u
#endif
#define ENABLE_CLOCKS() (RCC_AHB1ENR |= 0x3u, RCC_APB2ENR |= 1u << 4)
#else
#error "uart_stm32.c: uart_config.h must define MDY_UART_USART1 or MDY_UART_USART2"
#endif

#if defined(MDY_UART_STM32F7)
#define USART_CR1 REG(USART_BASE + 0x00u)
#define USART_BRR REG(USART_BASE + 0x0Cu)
#define USART_STATUS REG(USART_BASE + 0x1Cu) /* ISR */
#define USART_CLEAR REG(USART_BASE + 0x20u)  /* ICR */
#define USART_RX REG(USART_BASE + 0x24u)     /* RDR */
#define USART_TX REG(USART_BASE + 0x28u)     /* TDR */
#define CR1_UE 0x1u
#else
#define USART_STATUS REG(USART_BASE + 0x00u) /* SR */
#define USART_RX REG(USART_BASE + 0x04u)     /* DR */
#define USART_TX REG(USART_BASE + 0x04u)
#define USART_BRR REG(USART_BASE + 0x08u)
#define USART_CR1 REG(USART_BASE + 0x0Cu)
#define CR1_UE (1u << 13)
#endif
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define STATUS_ORE (1u << 3)
#define STATUS_RXNE (1u << 5)
#define STATUS_TXE (1u << 7)

static void alternate_function(uint32_t port, uint32_t pin)
{
    GPIO_MODER(port) = (GPIO_MODER(port) & ~(3u << (2u * pin))) | (2u << (2u * pin));
    if (pin < 8u) {
        GPIO_AFRL(port) = (GPIO_AFRL(port) & ~(0xFu << (4u * pin))) | (7u << (4u * pin));
    } else {
        GPIO_AFRH(port) = (GPIO_AFRH(port) & ~(0xFu << (4u * (pin - 8u))))
                          | (7u << (4u * (pin - 8u)));
    }
}

int mdy_uart_init(void)
{
    ENABLE_CLOCKS();
    alternate_function(TX_PORT, TX_PIN); /* AF7: USART1/2 on both families */
    alternate_function(RX_PORT, RX_PIN);
    USART_CR1 = 0;
    USART_BRR = (MDY_UART_CLOCK_HZ + MDY_UART_BAUD / 2u) / MDY_UART_BAUD; /* oversampling 16 */
    USART_CR1 = CR1_UE | CR1_TE | CR1_RE;
    return 0;
}

int mdy_uart_read(void)
{
    uint64_t start = mdy_cycles_now();
    for (;;) {
        uint32_t status = USART_STATUS;
        if (status & STATUS_RXNE) {
            return (int)(USART_RX & 0xFFu);
        }
        if (mdy_cycles_now() - start >= MDY_UART_IDLE_CYCLES) {
            return MDY_UART_IDLE;
        }
        if (status & STATUS_ORE) { /* an overrun: the frame's CRC will catch the lost byte */
#if defined(MDY_UART_STM32F7)
            USART_CLEAR = STATUS_ORE;
#else
            (void)USART_RX; /* SR then DR read clears ORE */
#endif
        }
    }
}

void mdy_uart_write(const uint8_t *data, uint32_t length)
{
    uint32_t i;
    for (i = 0; i < length; ++i) {
        while ((USART_STATUS & STATUS_TXE) == 0u) {
        }
        USART_TX = data[i];
    }
}
