/* A small event library that is linked into the host and never reloaded: it keeps a plain C
 * function pointer and calls it. The host hands it a forwarder into the module, so it keeps
 * calling the current build's handler across reloads without being told. */
typedef int (*events_handler)(int code);

static events_handler current_handler;

void events_subscribe(events_handler handler) { current_handler = handler; }

int events_publish(int code) { return current_handler ? current_handler(code) : -1; }
