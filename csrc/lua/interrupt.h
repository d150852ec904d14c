/*
 * interrupt.h: SIGINT (Ctrl-C) delivered once to a callback, for the Lua
 * binding's catch_interrupt: signal handling, apart from Lua.
 */
#ifndef INTERRUPT_H
#define INTERRUPT_H

#pragma GCC visibility push(hidden)   /* as in binding.h */

/* The next SIGINT calls on_interrupt() from the signal handler, once: the
 * handler resets to the default action as it is delivered, so a second
 * SIGINT kills the process. System calls it interrupts are not restarted
 * (a blocking read returns EINTR). on_interrupt must be async-signal-safe.
 * Returns 0, or -1 with errno. */
int bl_interrupt_arm(void (*on_interrupt)(void));

/* SIGINT's default action again, if an armed handler is still waiting. */
void bl_interrupt_disarm(void);

#pragma GCC visibility pop

#endif
