#include "semihosting.h"

#define SYS_OPEN 0x01u
#define SYS_CLOSE 0x02u
#define SYS_WRITE0 0x04u
#define SYS_WRITE 0x05u
#define SYS_READ 0x06u
#define SYS_EXIT 0x18u
#define SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define ADP_STOPPED_RUNTIME_ERROR_UNKNOWN 0x20023u

static uint32_t semihost(uint32_t operation, const void *argument)
{
    register uint32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static uint32_t length(const char *text)
{
    uint32_t n = 0;
    while (text[n] != '\0') {
        ++n;
    }
    return n;
}

int32_t mdy_semi_open(const char *path, uint32_t mode)
{
    uint32_t block[3];
    block[0] = (uint32_t)(uintptr_t)path;
    block[1] = mode;
    block[2] = length(path);
    return (int32_t)semihost(SYS_OPEN, block);
}

int32_t mdy_semi_close(int32_t handle)
{
    uint32_t block[1];
    block[0] = (uint32_t)handle;
    return (int32_t)semihost(SYS_CLOSE, block);
}

uint32_t mdy_semi_write(int32_t handle, const void *data, uint32_t bytes)
{
    uint32_t block[3];
    block[0] = (uint32_t)handle;
    block[1] = (uint32_t)(uintptr_t)data;
    block[2] = bytes;
    return semihost(SYS_WRITE, block);
}

uint32_t mdy_semi_read(int32_t handle, void *data, uint32_t bytes)
{
    uint32_t block[3];
    block[0] = (uint32_t)handle;
    block[1] = (uint32_t)(uintptr_t)data;
    block[2] = bytes;
    return semihost(SYS_READ, block);
}

void mdy_semi_write0(const char *text)
{
    (void)semihost(SYS_WRITE0, text);
}

void mdy_semi_exit(int32_t status)
{
    uint32_t block[2];
    block[0] = ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uint32_t)status;
    (void)semihost(SYS_EXIT_EXTENDED, block);
    /* A host without SYS_EXIT_EXTENDED returns here: report success or failure only. */
    (void)semihost(SYS_EXIT, (const void *)(uintptr_t)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT
                                                                   : ADP_STOPPED_RUNTIME_ERROR_UNKNOWN));
    for (;;) {
    }
}
