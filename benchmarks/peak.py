"""Peak memory of a benchmark's child process, measured the only way that is its own.

``ru_maxrss`` is inherited across fork and exec on Linux, so a child started by a parent that has
just generated gigabytes of inputs would report the parent's peak. ``VmHWM`` belongs to the
child's own address space. ``PEAK`` is source code that child programs start with.
"""

PEAK = """
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""
