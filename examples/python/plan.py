"""Plan a 12-layer model on 4 devices with the time-balanced planner and print the stages.

Run from the repository root:
    VPIPE_LIBRARY=.build/release/libvpipe.so PYTHONPATH=bindings/python python3 examples/python/plan.py
"""
import vpipe
from vpipe import pb

MiB, GiB = 1 << 20, 1 << 30

request = pb.PlanRequest()
request.model.name = "toy-transformer"
request.model.input_bytes = 8 * MiB
for l in range(12):
    layer = request.model.layers.add(name=f"block{l}")
    heavy = l in (0, 11)  # embedding and head cost more
    layer.profile.fwd_seconds = 0.004 if heavy else 0.002
    layer.profile.bwd_seconds = 2 * layer.profile.fwd_seconds
    layer.profile.stash_bytes = 48 * MiB
    layer.profile.output_bytes = 8 * MiB
    layer.profile.param_bytes = (96 if heavy else 32) * MiB
for d in range(4):
    request.cluster.devices.add(name=f"gpu{d}", memory_bytes=2 * GiB, host_bandwidth=12e9)
for _ in range(3):
    request.cluster.links.add(bandwidth=25e9, latency=5e-6)
request.options.micro_batches = 8
request.options.schedule = pb.SCHEDULE_1F1B
request.options.planner = pb.PLANNER_TIME_BALANCED

plan = vpipe.plan(request)
print(f"libvpipe {vpipe.version()}: {len(plan.stages)} stages, bottleneck {plan.bottleneck_seconds * 1e3:.2f} ms, "
      f"iteration {plan.iteration_seconds * 1e3:.2f} ms")
for s in plan.stages:
    print(f"  stage {s.device}: layers {s.first_layer:2d}-{s.last_layer:2d}  {s.stage_seconds * 1e3:6.2f} ms  "
          f"{s.peak_memory_bytes / GiB:5.2f} of {s.memory_bytes / GiB:.0f} GiB")
