/* SPDX-License-Identifier: Apache-2.0
 * loop.h: one epoll event loop per daemon (STYLE.md section 5): fd watches,
 * monotonic timers, signals through signalfd, and deferred calls. Watches and
 * timers are named by int ids >= 0 (the shape of libvirt's
 * virEventRegisterImpl, so the agent can hand the loop to libvirt).
 * Removal during dispatch is lazy: the entry is marked dead and freed, with
 * its free callback, after the current iteration. Single-threaded: no call
 * may be made from another thread except yun_loop_wakeup(). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct yun_loop;

/* 'events' uses EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP bits from <sys/epoll.h>. */
typedef void (*yun_loop_fd_cb)(struct yun_loop *loop, int id, int fd, uint32_t events,
                               void *data);
/* Returns the delay in ms until the next call, or YUN_LOOP_NOMORE to stop. */
typedef int64_t (*yun_loop_timer_cb)(struct yun_loop *loop, int id, void *data);
typedef void (*yun_loop_signal_cb)(struct yun_loop *loop, int sig, void *data);
typedef void (*yun_loop_free_cb)(void *data);

#define YUN_LOOP_NOMORE ((int64_t)-1)

/* Creates a loop. Returns 0 and stores it in '*ret', or a negative errno. */
int yun_loop_new(struct yun_loop **ret);
/* Frees the loop, calling the free callbacks of every live entry. NULL ok. */
struct yun_loop *yun_loop_free(struct yun_loop *loop);

/* Watches 'fd' for 'events'. Returns an id >= 0 or a negative errno. The
 * loop does not own 'fd'; 'free_cb' (may be NULL) is called on 'data' when
 * the watch is removed or the loop is freed. */
int yun_loop_add_fd(struct yun_loop *loop, int fd, uint32_t events, yun_loop_fd_cb cb,
                    void *data, yun_loop_free_cb free_cb);
/* Changes the events of watch 'id'; events 0 disables it. -ENOENT if gone. */
int yun_loop_update_fd(struct yun_loop *loop, int id, uint32_t events);
int yun_loop_remove_fd(struct yun_loop *loop, int id);

/* Calls 'cb' after 'msec' ms (0 = on the next iteration, -1 = disabled)
 * and then every time after the delay it returns. Returns an id >= 0. */
int yun_loop_add_timer(struct yun_loop *loop, int64_t msec, yun_loop_timer_cb cb, void *data,
                       yun_loop_free_cb free_cb);
/* Re-arms timer 'id' to fire after 'msec' ms (-1 disables it). */
int yun_loop_update_timer(struct yun_loop *loop, int id, int64_t msec);
int yun_loop_remove_timer(struct yun_loop *loop, int id);

/* Blocks 'sig' for the process and delivers it through signalfd to 'cb'.
 * At most one callback per signal. */
int yun_loop_add_signal(struct yun_loop *loop, int sig, yun_loop_signal_cb cb, void *data);

/* Runs until yun_loop_quit(). Returns the code passed to yun_loop_quit(). */
int yun_loop_run(struct yun_loop *loop);
/* Runs one iteration, waiting at most 'timeout_ms' (-1: until an event).
 * Returns the number of callbacks dispatched, or a negative errno. */
int yun_loop_run_once(struct yun_loop *loop, int timeout_ms);
void yun_loop_quit(struct yun_loop *loop, int code);
/* Thread-safe: makes a blocked yun_loop_run_once() return (eventfd). */
void yun_loop_wakeup(struct yun_loop *loop);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t yun_now_ms(void);
