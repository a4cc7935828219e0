//! The device wrapper: adapter selection, feature and limit detection, the
//! compiled kernels (one pipeline each, created once), buffer helpers and
//! async readback (awaitable in a Web Worker; natively the device is polled).

use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;

use crate::{GpuError, Result};

/// How to pick an adapter.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Accept a software (CPU) adapter such as Mesa lavapipe or SwiftShader
    /// when no hardware adapter exists. Off by default: a software adapter
    /// is slower than the CPU engine, so it is never chosen for real use
    /// unless asked for (tests ask for it).
    pub allow_software: bool,
    /// Use only a software adapter (`force_fallback_adapter`), even if a
    /// hardware GPU exists.
    pub force_software: bool,
}

impl GpuOptions {
    /// Options for tests and benchmarks: software adapters allowed.
    pub fn allow_software() -> Self {
        GpuOptions { allow_software: true, force_software: false }
    }
}

/// What the chosen adapter offers, as detected.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    /// A software rasterizer (lavapipe, SwiftShader, WARP).
    pub software: bool,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_workgroups_per_dimension: u32,
}

/// Every kernel the crate has. Each is one WGSL entry point `main`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Matmul,
    Matvec,
    MatvecQ,
    MatmulQ,
    EmbedQ,
    Norm,
    RopeKv,
    Attention,
    SiluMul,
    Gelu,
    Add,
    Embed,
    Argmax,
    Sample,
    Edit,
}

impl Kernel {
    pub const ALL: [Kernel; 15] = [
        Kernel::Matmul,
        Kernel::Matvec,
        Kernel::MatvecQ,
        Kernel::MatmulQ,
        Kernel::EmbedQ,
        Kernel::Norm,
        Kernel::RopeKv,
        Kernel::Attention,
        Kernel::SiluMul,
        Kernel::Gelu,
        Kernel::Add,
        Kernel::Embed,
        Kernel::Argmax,
        Kernel::Sample,
        Kernel::Edit,
    ];
    fn source(self) -> &'static str {
        match self {
            Kernel::Matmul => include_str!("shaders/matmul.wgsl"),
            Kernel::Matvec => include_str!("shaders/matvec.wgsl"),
            Kernel::MatvecQ => include_str!("shaders/matvec_q.wgsl"),
            Kernel::MatmulQ => include_str!("shaders/matmul_q.wgsl"),
            Kernel::EmbedQ => include_str!("shaders/embed_q.wgsl"),
            Kernel::Norm => include_str!("shaders/norm.wgsl"),
            Kernel::RopeKv => include_str!("shaders/rope_kv.wgsl"),
            Kernel::Attention => include_str!("shaders/attention.wgsl"),
            Kernel::SiluMul => include_str!("shaders/silu_mul.wgsl"),
            Kernel::Gelu => include_str!("shaders/gelu.wgsl"),
            Kernel::Add => include_str!("shaders/add.wgsl"),
            Kernel::Embed => include_str!("shaders/embed.wgsl"),
            Kernel::Argmax => include_str!("shaders/argmax.wgsl"),
            Kernel::Sample => include_str!("shaders/sample.wgsl"),
            Kernel::Edit => include_str!("shaders/edit.wgsl"),
        }
    }
    /// (read-only storage bindings, read-write storage bindings).
    pub fn bindings(self) -> (usize, usize) {
        match self {
            Kernel::Matmul | Kernel::Matvec | Kernel::MatvecQ | Kernel::MatmulQ | Kernel::Norm | Kernel::Attention => {
                (3, 1)
            }
            Kernel::RopeKv => (3, 3),
            Kernel::Sample => (2, 2),
            Kernel::SiluMul | Kernel::Gelu | Kernel::Argmax | Kernel::Edit => (1, 1),
            Kernel::Add | Kernel::Embed | Kernel::EmbedQ => (2, 1),
        }
    }
}

/// Per-dispatch constants: 16 words (u32 or f32 bits), one uniform buffer.
pub type Params = [u32; 16];

/// Builds a [`Params`] from leading words.
pub fn params(words: &[u32]) -> Params {
    let mut p = [0u32; 16];
    p[..words.len()].copy_from_slice(words);
    p
}

pub(crate) struct Pipe {
    pub layout: wgpu::BindGroupLayout,
    pub pipeline: wgpu::ComputePipeline,
}

/// A device, its queue and the compiled kernels.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: GpuInfo,
    pipes: HashMap<Kernel, Pipe>,
    /// Readback buffers by size, reused across calls.
    staging: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

fn is_software(info: &wgpu::AdapterInfo) -> bool {
    let n = info.name.to_lowercase();
    info.device_type == wgpu::DeviceType::Cpu
        || n.contains("llvmpipe")
        || n.contains("lavapipe")
        || n.contains("swiftshader")
        || n.contains("microsoft basic render")
}

impl Gpu {
    /// Picks an adapter (hardware first: discrete, integrated, virtual, other;
    /// software only if `opts` allows it) and creates a device with the
    /// adapter's own limits, plus shader-f16 and subgroups when offered.
    pub async fn new(opts: &GpuOptions) -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = Self::pick_adapter(&instance, opts).await?;
        let ainfo = adapter.get_info();
        let software = is_software(&ainfo);
        let features = adapter.features();
        let mut want = wgpu::Features::empty();
        for f in [wgpu::Features::SHADER_F16, wgpu::Features::SUBGROUP] {
            if features.contains(f) {
                want |= f;
            }
        }
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("scalpel-gpu"),
                required_features: want,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| GpuError::Device(format!("request_device on '{}': {e}", ainfo.name)))?;
        let info = GpuInfo {
            name: ainfo.name.clone(),
            backend: format!("{:?}", ainfo.backend),
            device_type: device_type_name(ainfo.device_type).into(),
            software,
            shader_f16: want.contains(wgpu::Features::SHADER_F16),
            subgroups: want.contains(wgpu::Features::SUBGROUP),
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size as u64,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        };
        // The WebGPU defaults: `matmul_q` uses 16 KiB of workgroup memory.
        if info.max_compute_invocations_per_workgroup < 256 || info.max_compute_workgroup_storage_size < 16384 {
            return Err(GpuError::Device(format!(
                "adapter '{}' allows {} invocations and {} bytes of workgroup memory per workgroup; the kernels need 256 and 16384",
                info.name, info.max_compute_invocations_per_workgroup, info.max_compute_workgroup_storage_size
            )));
        }
        let mut layouts: HashMap<(usize, usize), wgpu::BindGroupLayout> = HashMap::new();
        let mut pipes = HashMap::new();
        let header = include_str!("shaders/common.wgsl");
        for k in Kernel::ALL {
            let (ro, rw) = k.bindings();
            let layout = layouts
                .entry((ro, rw))
                .or_insert_with(|| {
                    let mut entries = Vec::new();
                    for b in 0..2 {
                        entries.push(wgpu::BindGroupLayoutEntry {
                            binding: b,
                            visibility: wgpu::ShaderStages::COMPUTE,
                            ty: wgpu::BindingType::Buffer {
                                ty: wgpu::BufferBindingType::Uniform,
                                has_dynamic_offset: false,
                                min_binding_size: None,
                            },
                            count: None,
                        });
                    }
                    for i in 0..ro + rw {
                        entries.push(wgpu::BindGroupLayoutEntry {
                            binding: 2 + i as u32,
                            visibility: wgpu::ShaderStages::COMPUTE,
                            ty: wgpu::BindingType::Buffer {
                                ty: wgpu::BufferBindingType::Storage { read_only: i < ro },
                                has_dynamic_offset: false,
                                min_binding_size: None,
                            },
                            count: None,
                        });
                    }
                    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some(&format!("layout {ro}r{rw}w")),
                        entries: &entries,
                    })
                })
                .clone();
            let src = format!("{header}\n{}", k.source());
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&format!("{k:?}")),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&format!("{k:?}")),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&format!("{k:?}")),
                layout: Some(&pl),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            pipes.insert(k, Pipe { layout, pipeline });
        }
        Ok(Gpu { device, queue, info, pipes, staging: Mutex::new(HashMap::new()) })
    }

    async fn pick_adapter(instance: &wgpu::Instance, opts: &GpuOptions) -> Result<wgpu::Adapter> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let mut all = instance.enumerate_adapters(wgpu::Backends::PRIMARY).await;
            let rank = |a: &wgpu::Adapter| {
                let i = a.get_info();
                let sw = is_software(&i);
                let t = match i.device_type {
                    wgpu::DeviceType::DiscreteGpu => 0,
                    wgpu::DeviceType::IntegratedGpu => 1,
                    wgpu::DeviceType::VirtualGpu => 2,
                    wgpu::DeviceType::Other => 3,
                    wgpu::DeviceType::Cpu => 4,
                };
                // Vulkan first among equals (the tested backend here).
                let b = if i.backend == wgpu::Backend::Vulkan { 0 } else { 1 };
                (sw as u8, t, b)
            };
            all.sort_by_key(rank);
            let names: Vec<String> = all.iter().map(|a| {
                let i = a.get_info();
                format!("{} ({:?}, {})", i.name, i.backend, device_type_name(i.device_type))
            }).collect();
            let pick = if opts.force_software {
                all.into_iter().find(|a| is_software(&a.get_info()))
            } else {
                all.into_iter().find(|a| opts.allow_software || !is_software(&a.get_info()))
            };
            pick.ok_or_else(|| {
                GpuError::NoAdapter(if names.is_empty() {
                    "no WebGPU/Vulkan/Metal/DX12 adapter found".into()
                } else if opts.force_software {
                    format!("no software adapter among: {}", names.join(", "))
                } else {
                    format!("only software adapters found ({}); pass allow_software to use one", names.join(", "))
                })
            })
        }
        #[cfg(target_arch = "wasm32")]
        {
            let req = |force| wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: force,
                ..Default::default()
            };
            if !opts.force_software {
                if let Ok(a) = instance.request_adapter(&req(false)).await {
                    if opts.allow_software || !is_software(&a.get_info()) {
                        return Ok(a);
                    }
                }
            }
            if opts.allow_software || opts.force_software {
                if let Ok(a) = instance.request_adapter(&req(true)).await {
                    return Ok(a);
                }
            }
            Err(GpuError::NoAdapter("navigator.gpu gave no (hardware) adapter".into()))
        }
    }

    pub(crate) fn pipe(&self, k: Kernel) -> &Pipe {
        &self.pipes[&k]
    }

    pub fn pipeline(&self, k: Kernel) -> &wgpu::ComputePipeline {
        &self.pipes[&k].pipeline
    }

    /// A storage buffer holding `data` (padded to at least 16 bytes).
    pub fn storage(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        let mut v;
        let contents = if data.len() < 16 || !data.len().is_multiple_of(4) {
            v = data.to_vec();
            v.resize(data.len().max(16).div_ceil(4) * 4, 0);
            &v[..]
        } else {
            data
        };
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        })
    }

    pub fn storage_f32(&self, label: &str, data: &[f32]) -> wgpu::Buffer {
        self.storage(label, bytemuck::cast_slice(data))
    }

    /// A zeroed storage buffer of `bytes` bytes (at least 16).
    pub fn storage_zeroed(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).div_ceil(4) * 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    pub fn uniform(&self, label: &str, p: &Params) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(p),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// A bind group for `k`: the step uniform, the params uniform, then
    /// read-only and read-write storage buffers in binding order.
    pub fn bind(&self, k: Kernel, step: &wgpu::Buffer, params: &wgpu::Buffer, storage: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let (ro, rw) = k.bindings();
        assert_eq!(storage.len(), ro + rw, "{k:?} takes {ro} + {rw} storage buffers");
        let mut entries = vec![
            wgpu::BindGroupEntry { binding: 0, resource: step.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: params.as_entire_binding() },
        ];
        for (i, b) in storage.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: 2 + i as u32, resource: b.as_entire_binding() });
        }
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&format!("{k:?}")),
            layout: &self.pipe(k).layout,
            entries: &entries,
        })
    }

    pub(crate) fn take_staging(&self, size: u64) -> wgpu::Buffer {
        let size = size.max(4).div_ceil(4) * 4;
        if let Some(b) = self.staging.lock().unwrap().get_mut(&size).and_then(|v| v.pop()) {
            return b;
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub(crate) fn give_staging(&self, b: wgpu::Buffer) {
        self.staging.lock().unwrap().entry(b.size()).or_default().push(b);
    }

    /// Maps every staging buffer (after the submit that fills them) and
    /// returns their first `len` bytes each. Awaits the GPU: in the browser
    /// this yields to the event loop; natively it polls the device.
    pub(crate) async fn read_staging(&self, bufs: &[(wgpu::Buffer, u64)]) -> Result<Vec<Vec<u8>>> {
        let mut rxs = Vec::with_capacity(bufs.len());
        for (b, len) in bufs {
            let (tx, rx) = futures_channel::oneshot::channel();
            b.map_async(wgpu::MapMode::Read, 0..(*len).div_ceil(4) * 4, move |r| {
                let _ = tx.send(r);
            });
            rxs.push(rx);
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Device(format!("poll: {e}")))?;
        let mut out = Vec::with_capacity(bufs.len());
        for ((b, len), rx) in bufs.iter().zip(rxs) {
            rx.await
                .map_err(|_| GpuError::Device("readback was cancelled".into()))?
                .map_err(|e| GpuError::Device(format!("map_async: {e}")))?;
            {
                let view = b
                    .get_mapped_range(0..(*len).div_ceil(4) * 4)
                    .map_err(|e| GpuError::Device(format!("get_mapped_range: {e:?}")))?;
                out.push(view[..*len as usize].to_vec());
            }
            b.unmap();
        }
        Ok(out)
    }

    /// Runs one kernel once on fresh buffers and returns the read-write
    /// buffers' contents (kernel tests). `rw` gives each read-write buffer's
    /// initial bytes.
    pub async fn run_kernel(
        &self,
        k: Kernel,
        step: [u32; 4],
        p: Params,
        ro: &[&[u8]],
        rw: &[&[u8]],
        workgroups: [u32; 3],
    ) -> Result<Vec<Vec<u8>>> {
        let stepb = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("step"),
            contents: bytemuck::cast_slice(&step),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let pb = self.uniform("params", &p);
        let bufs: Vec<wgpu::Buffer> = ro.iter().chain(rw).map(|d| self.storage("arg", d)).collect();
        let refs: Vec<&wgpu::Buffer> = bufs.iter().collect();
        let bg = self.bind(k, &stepb, &pb, &refs);
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(self.pipeline(k));
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        }
        let mut reads = Vec::new();
        for (b, d) in bufs[ro.len()..].iter().zip(rw) {
            let s = self.take_staging(b.size());
            enc.copy_buffer_to_buffer(b, 0, &s, 0, b.size());
            reads.push((s, d.len() as u64));
        }
        self.queue.submit(Some(enc.finish()));
        let out = self.read_staging(&reads).await?;
        for (s, _) in reads {
            self.give_staging(s);
        }
        Ok(out)
    }
}
