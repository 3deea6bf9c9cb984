import ctypes, sys, random
# Each rank opens a session with the same config through the C ABI (ctypes, RTLD_LOCAL).
import os
lib = ctypes.CDLL(os.environ["VPIPE_LIBRARY"])
cfg = open(sys.argv[1], "rb").read()
h = ctypes.c_void_p()
rc = lib.vp_session_open(cfg, ctypes.c_size_t(len(cfg)), ctypes.byref(h))
lib.vp_last_error.restype = ctypes.c_char_p
if rc != 0: print("open failed", lib.vp_last_error()); sys.exit(1)
random.seed(0)
x = (ctypes.c_float * (32 * 8))(*[random.uniform(-1, 1) for _ in range(256)])
y = (ctypes.c_int32 * 32)(*[random.randrange(4) for _ in range(32)])
losses = []
for k in range(3):
    loss = ctypes.c_float()
    rc = lib.vp_session_step(h, x, ctypes.c_size_t(256), y, ctypes.c_size_t(32), ctypes.byref(loss))
    if rc != 0: print("step failed", lib.vp_last_error()); sys.exit(1)
    losses.append(repr(loss.value))
print("py rank %s losses %s" % (os.environ.get("OMPI_COMM_WORLD_RANK"), " ".join(losses)), flush=True)
lib.vp_session_close(h)
