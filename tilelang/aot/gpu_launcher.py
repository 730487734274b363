"""The GPU launcher of an ahead-of-time build: ``NAME.c``.

`gpu_source(iface, images)` writes a C file that checks the arguments (the shared
`c_launcher.common`), loads the CUDA driver with ``dlopen("libcuda.so.1")``
(``TILELANG_LIBCUDA`` names another file) through prototypes declared here, so it
compiles with any C compiler and no CUDA header, picks the image for the device of the
current context (or device 0's primary context, made current), loads it once per
context (modules stay loaded) and launches on the caller's stream. The cubins and PTX
are embedded as byte arrays: the launcher is one self-contained file (link with
``-ldl -lpthread`` on glibc older than 2.34).

Image choice (most specific first, `pick` in Python): a cubin built for the device's
exact "a" architecture (sm_90a on a 9.0 device), then a cubin of the same major version
and the highest minor not above the device's (an sm_80 cubin runs on sm_86 and sm_89),
then the PTX of the highest non-"a" architecture not above the device's, which the
driver compiles (a driver that knows the PTX's `.version`: see `tilelang.aot.ptx`);
each only if the device's blocks may have the shared memory it needs
(``CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN``: 163 KiB on sm_80, 99 KiB
on sm_86 and sm_89, so an sm_80 build of a deep pipeline does not run there). No image
that fits is ``TILELANG_AOT_ERROR_ARCH``, naming the device and the images built, or,
when one is refused for its shared memory only, what it needs, what the device gives
and the ``--arch`` to add (`tilelang.aot.build` warns of it at compile time).

A missing driver library (or one without the entry points used) is
``TILELANG_AOT_ERROR_DRIVER_NOT_FOUND``; ``cuInit`` failing (no GPU, a driver that does
not initialize) is ``TILELANG_AOT_ERROR_NO_DEVICE``; any later driver failure is
``TILELANG_AOT_ERROR_CUDA`` with the call and the driver's error name and text.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilelang.aot.c_expr import C_HELPERS, c_string
from tilelang.aot.c_launcher import check_call, common, includes, size_value
from tilelang.aot.interface import KernelInterface
from tilelang.codegen.cuda import kernel_params

GPU_ALIGNMENT = 16


@dataclass(frozen=True)
class Image:
    """One GPU binary the launcher may load."""

    arch: str  # "sm_80", "sm_90a"
    kind: str  # "cubin" or "ptx"
    data: bytes  # a PTX image ends with its NUL
    symbol: str
    threads: int
    shared_bytes: int  # dynamic, what the launch asks for
    static_shared_bytes: int = 0  # what the code declares itself (ptxas's count)

    @property
    def major_minor(self) -> tuple[int, int, int]:
        major, minor = arch_version(self.arch)
        return major, minor, int(self.arch.endswith("a"))

    @property
    def shared_need(self) -> int:
        """Shared memory one block needs: what a device's per-block maximum must hold."""
        return self.shared_bytes + self.static_shared_bytes


def arch_version(arch: str) -> tuple[int, int]:
    """The compute capability of "sm_86" (8, 6), "sm_90a" (9, 0), "sm_120" (12, 0)."""
    digits = arch[3:].rstrip("af")
    return int(digits[:-1]), int(digits[-1])


def pick(images: tuple[Image, ...], major: int, minor: int, shared: int) -> int:
    """The index of the image the launcher's ``tl_pick`` loads on a device of compute
    capability major.minor whose blocks may have `shared` bytes of shared memory, or -1
    (the same rules: an exact "a" cubin, the same major's cubin of the highest minor not
    above the device's, the PTX of the highest non-"a" architecture not above it)."""
    fits = [k for k, i in enumerate(images) if i.shared_need <= shared]
    for k in fits:
        i = images[k]
        if i.kind == "cubin" and i.major_minor == (major, minor, 1):
            return k
    cubins = [k for k in fits if images[k].kind == "cubin" and not images[k].major_minor[2]]
    same = [
        k for k in cubins if images[k].major_minor[0] == major and images[k].major_minor[1] <= minor
    ]
    if same:
        return max(same, key=lambda k: images[k].major_minor[1])
    ptx = [k for k in fits if images[k].kind == "ptx" and not images[k].major_minor[2]]
    below = [k for k in ptx if images[k].major_minor[:2] <= (major, minor)]
    return max(below, key=lambda k: images[k].major_minor[:2]) if below else -1


_DRIVER = r"""
/* The few CUDA driver types and entry points the launcher uses (cuda.h's ABI). */
typedef int tl_CUresult;
typedef int tl_CUdevice;
typedef struct tl_CUctx_st *tl_CUcontext;
typedef struct tl_CUmod_st *tl_CUmodule;
typedef struct tl_CUfunc_st *tl_CUfunction;
typedef struct tl_CUstream_st *tl_CUstream;
typedef unsigned long long tl_CUdeviceptr;
#define TL_CUDA_SUCCESS 0
#define TL_CUDA_ERROR_NO_DEVICE 100
#define TL_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define TL_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define TL_CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN 97
#define TL_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES 8

static struct {
  tl_CUresult (*cuInit)(unsigned int);
  tl_CUresult (*cuGetErrorName)(tl_CUresult, const char **);
  tl_CUresult (*cuGetErrorString)(tl_CUresult, const char **);
  tl_CUresult (*cuCtxGetCurrent)(tl_CUcontext *);
  tl_CUresult (*cuCtxSetCurrent)(tl_CUcontext);
  tl_CUresult (*cuCtxGetDevice)(tl_CUdevice *);
  tl_CUresult (*cuDeviceGet)(tl_CUdevice *, int);
  tl_CUresult (*cuDevicePrimaryCtxRetain)(tl_CUcontext *, tl_CUdevice);
  tl_CUresult (*cuDeviceGetAttribute)(int *, int, tl_CUdevice);
  tl_CUresult (*cuModuleLoadData)(tl_CUmodule *, const void *);
  tl_CUresult (*cuModuleGetFunction)(tl_CUfunction *, tl_CUmodule, const char *);
  tl_CUresult (*cuFuncSetAttribute)(tl_CUfunction, int, int);
  tl_CUresult (*cuLaunchKernel)(tl_CUfunction, unsigned int, unsigned int, unsigned int,
                                unsigned int, unsigned int, unsigned int, unsigned int,
                                tl_CUstream, void **, void **);
} tl_cu;

static pthread_once_t tl_driver_once = PTHREAD_ONCE_INIT;
static int tl_driver_status = TILELANG_AOT_OK;
static char tl_driver_message[512];
static pthread_mutex_t tl_lock = PTHREAD_MUTEX_INITIALIZER;

static void *tl_symbol(void *library, const char *symbol) {
  void *address = dlsym(library, symbol);
  if (address == NULL && tl_driver_status == TILELANG_AOT_OK) {
    tl_driver_status = TILELANG_AOT_ERROR_DRIVER_NOT_FOUND;
    snprintf(tl_driver_message, sizeof tl_driver_message,
             "the CUDA driver library has no %s (a driver too old?)", symbol);
  }
  return address;
}

static void tl_load_driver(void) {
  const char *path = getenv("TILELANG_LIBCUDA");
  void *library;
  tl_CUresult result;
  if (path == NULL || path[0] == 0) path = "libcuda.so.1";
  library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) {
    const char *why = dlerror();
    tl_driver_status = TILELANG_AOT_ERROR_DRIVER_NOT_FOUND;
    snprintf(tl_driver_message, sizeof tl_driver_message,
             "the CUDA driver library %s cannot be loaded (%s): is an NVIDIA driver installed?",
             path, why ? why : "unknown reason");
    return;
  }
#define TL_LOAD(fn) *(void **)(&tl_cu.fn) = tl_symbol(library, #fn)
  TL_LOAD(cuInit);
  TL_LOAD(cuGetErrorName);
  TL_LOAD(cuGetErrorString);
  TL_LOAD(cuCtxGetCurrent);
  TL_LOAD(cuCtxSetCurrent);
  TL_LOAD(cuCtxGetDevice);
  TL_LOAD(cuDeviceGet);
  TL_LOAD(cuDevicePrimaryCtxRetain);
  TL_LOAD(cuDeviceGetAttribute);
  TL_LOAD(cuModuleLoadData);
  TL_LOAD(cuModuleGetFunction);
  TL_LOAD(cuFuncSetAttribute);
  TL_LOAD(cuLaunchKernel);
#undef TL_LOAD
  if (tl_driver_status != TILELANG_AOT_OK) return;
  result = tl_cu.cuInit(0);
  if (result == TL_CUDA_ERROR_NO_DEVICE) {
    tl_driver_status = TILELANG_AOT_ERROR_NO_DEVICE;
    snprintf(tl_driver_message, sizeof tl_driver_message,
             "the CUDA driver found no device (cuInit: CUDA_ERROR_NO_DEVICE)");
  } else if (result != TL_CUDA_SUCCESS) {
    const char *text = NULL;
    tl_driver_status = TILELANG_AOT_ERROR_NO_DEVICE;
    tl_cu.cuGetErrorString(result, &text);
    snprintf(tl_driver_message, sizeof tl_driver_message,
             "the CUDA driver did not initialize (cuInit: error %d: %s)", result,
             text ? text : "unknown error");
  }
}

static int tl_cuda_fail(const char *call, tl_CUresult result) {
  const char *name = NULL, *text = NULL;
  tl_cu.cuGetErrorName(result, &name);
  tl_cu.cuGetErrorString(result, &text);
  return tl_fail(TILELANG_AOT_ERROR_CUDA, "%s failed: %s: %s", call,
                 name ? name : "unknown error", text ? text : "");
}
"""


def _c_bytes(data: bytes) -> str:
    rows = []
    for start in range(0, len(data), 24):
        rows.append("  " + ",".join(str(b) for b in data[start : start + 24]) + ",")
    return "\n".join(rows) if rows else "  0,"


def gpu_source(iface: KernelInterface, images: tuple[Image, ...]) -> str:
    """``NAME.c``: the checks, then the launch of the image that fits the device."""
    name = iface.name
    params = kernel_params(iface.thread)
    c_names = {a.name: a.c_name for a in iface.args}
    lines = [
        f"/* Generated by `tilelang compile`: {iface.kernel} on an NVIDIA GPU (CUDA driver API, "
        "loaded with dlopen). */",
        includes(name, ("dlfcn.h", "pthread.h")),
        C_HELPERS,
        common(iface, alignment=GPU_ALIGNMENT),
        _DRIVER,
    ]
    for k, image in enumerate(images):
        lines += [f"static const unsigned char tl_image_{k}[] = {{", _c_bytes(image.data), "};"]
    lines += [
        "",
        "static const struct tl_image {",
        "  int major, minor, specific, is_ptx;",
        "  const unsigned char *data;",
        "  const char *arch, *symbol;",
        "  unsigned int threads, shared_bytes, shared_need;",
        "} tl_images[] = {",
    ]
    for k, image in enumerate(images):
        major, minor, specific = image.major_minor
        lines.append(
            f"  {{{major}, {minor}, {specific}, {int(image.kind == 'ptx')}, tl_image_{k}, "
            f"{c_string(image.arch)}, {c_string(image.symbol)}, {image.threads}, "
            f"{image.shared_bytes}, {image.shared_need}}},"
        )
    archs = ", ".join(f"{i.arch} {i.kind}" for i in images)
    lines += [
        "};",
        f"#define TL_IMAGES {len(images)}",
        "",
        "/* The image for compute capability major.minor whose blocks may have `shared` bytes",
        " * of shared memory (-1: none); see the module notes. */",
        "static int tl_pick(int major, int minor, unsigned int shared) {",
        "  int best = -1, k;",
        "  for (k = 0; k < TL_IMAGES; ++k)",
        "    if (!tl_images[k].is_ptx && tl_images[k].specific && tl_images[k].major == major &&",
        "        tl_images[k].minor == minor && tl_images[k].shared_need <= shared) return k;",
        "  for (k = 0; k < TL_IMAGES; ++k)",
        "    if (!tl_images[k].is_ptx && !tl_images[k].specific && tl_images[k].major == major &&",
        "        tl_images[k].minor <= minor && tl_images[k].shared_need <= shared &&",
        "        (best < 0 || tl_images[k].minor > tl_images[best].minor))",
        "      best = k;",
        "  if (best >= 0) return best;",
        "  for (k = 0; k < TL_IMAGES; ++k) {",
        "    const struct tl_image *i = &tl_images[k];",
        "    if (!i->is_ptx || i->specific || i->shared_need > shared) continue;",
        "    if (i->major * 10 + i->minor > major * 10 + minor) continue;",
        "    if (best < 0 || i->major * 10 + i->minor > tl_images[best].major * 10 + tl_images[best].minor)",
        "      best = k;",
        "  }",
        "  return best;",
        "}",
        "",
        "#define TL_CONTEXTS 16",
        "static struct { tl_CUcontext context; tl_CUfunction function; int image; } tl_loaded[TL_CONTEXTS];",
        "",
        "/* The kernel loaded in the current context (device 0's primary one if none is current). */",
        "static int tl_function(tl_CUfunction *function, int *image) {",
        "  tl_CUcontext context = NULL;",
        "  tl_CUdevice device;",
        "  tl_CUmodule module;",
        "  tl_CUresult r;",
        "  int major = 0, minor = 0, shared = 0, unfit = -1, k, status = TILELANG_AOT_OK;",
        "  pthread_once(&tl_driver_once, tl_load_driver);",
        "  if (tl_driver_status != TILELANG_AOT_OK)",
        '    return tl_fail(tl_driver_status, "%s", tl_driver_message);',
        '  if ((r = tl_cu.cuCtxGetCurrent(&context)) != TL_CUDA_SUCCESS) return tl_cuda_fail("cuCtxGetCurrent", r);',
        "  if (context == NULL) {",
        '    if ((r = tl_cu.cuDeviceGet(&device, 0)) != TL_CUDA_SUCCESS) return tl_cuda_fail("cuDeviceGet", r);',
        "    if ((r = tl_cu.cuDevicePrimaryCtxRetain(&context, device)) != TL_CUDA_SUCCESS)",
        '      return tl_cuda_fail("cuDevicePrimaryCtxRetain", r);',
        '    if ((r = tl_cu.cuCtxSetCurrent(context)) != TL_CUDA_SUCCESS) return tl_cuda_fail("cuCtxSetCurrent", r);',
        "  }",
        "  pthread_mutex_lock(&tl_lock);",
        "  for (k = 0; k < TL_CONTEXTS && tl_loaded[k].context != NULL; ++k)",
        "    if (tl_loaded[k].context == context) {",
        "      *function = tl_loaded[k].function;",
        "      *image = tl_loaded[k].image;",
        "      pthread_mutex_unlock(&tl_lock);",
        "      return TILELANG_AOT_OK;",
        "    }",
        "  if (k == TL_CONTEXTS) {",
        "    pthread_mutex_unlock(&tl_lock);",
        f'    return tl_fail(TILELANG_AOT_ERROR_CUDA, "{name}: used from more than %d CUDA contexts", TL_CONTEXTS);',
        "  }",
        '  if ((r = tl_cu.cuCtxGetDevice(&device)) != TL_CUDA_SUCCESS) { status = tl_cuda_fail("cuCtxGetDevice", r); goto done; }',
        "  if ((r = tl_cu.cuDeviceGetAttribute(&major, TL_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)) != TL_CUDA_SUCCESS ||",
        "      (r = tl_cu.cuDeviceGetAttribute(&minor, TL_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)) != TL_CUDA_SUCCESS ||",
        "      (r = tl_cu.cuDeviceGetAttribute(&shared, TL_CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, device)) != TL_CUDA_SUCCESS) {",
        '    status = tl_cuda_fail("cuDeviceGetAttribute", r);',
        "    goto done;",
        "  }",
        "  *image = tl_pick(major, minor, (unsigned int)shared);",
        "  if (*image < 0 && (unfit = tl_pick(major, minor, ~0u)) >= 0) {",
        # An image for the architecture that needs more shared memory than the device has
        # (an sm_80 build of a deep pipeline on sm_86/sm_89): cuFuncSetAttribute would fail.
        f'    status = tl_fail(TILELANG_AOT_ERROR_ARCH, "{iface.kernel}: the %s %s of this build needs %u B of '
        "shared memory per block, but the device (sm_%d%d) gives at most %d B; build the kernel "
        'for it too (--arch sm_%d%d; smaller tiles or fewer stages if it does not fit)", tl_images[unfit].arch, '
        'tl_images[unfit].is_ptx ? "PTX" : "cubin", tl_images[unfit].shared_need, major, minor, shared, major, minor);',
        "    goto done;",
        "  }",
        "  if (*image < 0) {",
        f'    status = tl_fail(TILELANG_AOT_ERROR_ARCH, "{iface.kernel}: the device is sm_%d%d; this build has {archs}", major, minor);',
        "    goto done;",
        "  }",
        "  if ((r = tl_cu.cuModuleLoadData(&module, tl_images[*image].data)) != TL_CUDA_SUCCESS) {",
        '    status = tl_cuda_fail("cuModuleLoadData", r);',
        "    goto done;",
        "  }",
        "  if ((r = tl_cu.cuModuleGetFunction(function, module, tl_images[*image].symbol)) != TL_CUDA_SUCCESS) {",
        '    status = tl_cuda_fail("cuModuleGetFunction", r);',
        "    goto done;",
        "  }",
        "  if (tl_images[*image].shared_bytes > 48 * 1024 &&",
        "      (r = tl_cu.cuFuncSetAttribute(*function, TL_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,",
        "                                    (int)tl_images[*image].shared_bytes)) != TL_CUDA_SUCCESS) {",
        '    status = tl_cuda_fail("cuFuncSetAttribute", r);',
        "    goto done;",
        "  }",
        "  tl_loaded[k].context = context;",
        "  tl_loaded[k].function = *function;",
        "  tl_loaded[k].image = *image;",
        "done:",
        "  pthread_mutex_unlock(&tl_lock);",
        "  return status;",
        "}",
        "",
        f"{iface.prototype()} {{",
        *check_call(iface),
        "  tl_CUfunction tl_kernel = NULL;",
        "  int tl_image = 0;",
        "  tl_CUresult tl_result;",
        "  tl_status_code = tl_function(&tl_kernel, &tl_image);",
        "  if (tl_status_code != TILELANG_AOT_OK) return tl_status_code;",
    ]
    pointers = []
    for k, param in enumerate(params):
        variable = f"tl_p{k}"
        if param.is_tensor:
            lines.append(
                f"  tl_CUdeviceptr {variable} = (tl_CUdeviceptr)(uintptr_t){c_names[param.name]};"
            )
        else:
            size = size_value(iface, param.name)
            value = size if size is not None else c_names[param.name]
            ctype = _param_c_type(param)
            if param.dtype.name == "u1":
                value = f"({value}) != 0"
            lines.append(f"  {ctype} {variable} = ({ctype})({value});")
        pointers.append(f"&{variable}")
    lines += [
        f"  void *tl_params[] = {{{', '.join(pointers)}}};",
        "  tl_result = tl_cu.cuLaunchKernel(tl_kernel, (unsigned int)tl_grid[0], (unsigned int)tl_grid[1],",
        "                                   (unsigned int)tl_grid[2], tl_images[tl_image].threads, 1, 1,",
        "                                   tl_images[tl_image].shared_bytes, (tl_CUstream)stream, tl_params, NULL);",
        '  if (tl_result != TL_CUDA_SUCCESS) return tl_cuda_fail("cuLaunchKernel", tl_result);',
        "  return TILELANG_AOT_OK;",
        "}",
        "",
    ]
    return "\n".join(lines)


def _param_c_type(param) -> str:
    """The C type of a scalar kernel parameter, by its size (the ABI passes f16/bf16 as
    their 16-bit code, u1 as one byte, floats as float/double)."""
    if param.dtype.is_float and param.dtype.bits == 32:
        return "float"
    if param.dtype.is_float and param.dtype.bits == 64:
        return "double"
    # An integer's bits are the same in the unsigned type of its size.
    return {1: "uint8_t", 2: "uint16_t", 4: "uint32_t", 8: "uint64_t"}[param.size]
