/* interrupt.c: the one-shot SIGINT handler behind the binding's
 * catch_interrupt (see interrupt.h). */
#include "interrupt.h"

#include <signal.h>
#include <string.h>

static void (*volatile callback)(void);

static void on_sigint(int sig)
{
    (void)sig;
    callback();
}

static int set_sigint(void (*handler)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGINT, &sa, NULL);
}

int bl_interrupt_arm(void (*on_interrupt)(void))
{
    callback = on_interrupt;
    return set_sigint(on_sigint, SA_RESETHAND);
}

void bl_interrupt_disarm(void)
{
    struct sigaction cur;
    if (sigaction(SIGINT, NULL, &cur) == 0 && cur.sa_handler == on_sigint)
        (void)set_sigint(SIG_DFL, 0);   /* only ever called while closing: no one to tell */
}
