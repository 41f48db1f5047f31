/*
 * Arm semihosting ("Semihosting for AArch32 and AArch64", release 2): the target executes
 * BKPT 0xAB with an operation number in r0 and an argument block in r1; QEMU
 * (-semihosting-config enable=on) or a debug probe performs the operation on the host.
 * Without a host attached, BKPT stops the core: use only under QEMU or a debugger.
 */
#ifndef MDY_SEMIHOSTING_H
#define MDY_SEMIHOSTING_H

#include <stdint.h>

/* SYS_OPEN modes (ISO C fopen modes, in this order: r rb r+ r+b w wb w+ w+b a ab a+ a+b). */
#define MDY_SEMI_OPEN_READ_BINARY 1u
#define MDY_SEMI_OPEN_WRITE_BINARY 5u

/* A host file handle, or -1 if the host could not open `path`. */
int32_t mdy_semi_open(const char *path, uint32_t mode);
int32_t mdy_semi_close(int32_t handle);
/* Both return the number of bytes NOT transferred (0 on success), as the host reports it. */
uint32_t mdy_semi_write(int32_t handle, const void *data, uint32_t bytes);
uint32_t mdy_semi_read(int32_t handle, void *data, uint32_t bytes);
/* Writes a NUL-terminated string to the host's console. */
void mdy_semi_write0(const char *text);
/* Ends the program with exit status `status` (QEMU exits with it): SYS_EXIT_EXTENDED, since plain
 * SYS_EXIT on 32-bit Arm can only report success or failure. */
void mdy_semi_exit(int32_t status) __attribute__((noreturn));

#endif /* MDY_SEMIHOSTING_H */
