"""Validated configuration of the virtual bench (pydantic v2).

Every physical constant of the simulated bench lives here, with its source: a seed
paper (``../shared/seeds``; 000 = Starshynov et al. Nat. Photon. 2025, 001 = blind-SIM
Sci. Rep. 2022, 003 = cross-dataset generalisation through a diffuser) and the section
it comes from, or the reasoning behind the choice when the seed is silent. All models
use ``extra="forbid"`` so a typo in a TOML file (``wavelenght_nm``) is refused with a
message that names the unknown key instead of being silently ignored.

Units are in the field names (``_um``, ``_nm``, ``_s``, ``_w``); lengths "at the sample"
are in the sample plane, "at the camera" in the sensor plane.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PLANCK_J_S = 6.62607015e-34  # exact (SI 2019)
LIGHT_SPEED_M_S = 299_792_458.0  # exact (SI)


class _Strict(BaseModel):
    """Base: unknown keys are errors, assignments are re-validated, inf and NaN are refused (``gt=0``
    lets inf through)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


class DmdGeometry(_Strict):
    """The Vialux V-7001 mirror array (seed 000 Methods; seed 003 Methods)."""

    rows: int = Field(768, gt=0, description="V-7001: 1024x768 mirrors (seed 003 Methods)")
    cols: int = Field(1024, gt=0)
    pixel_um: float = Field(13.7, gt=0, description="mirror pitch, 13.7 um (seed 000 and 003 Methods)")


class MediumConfig(_Strict):
    """The flowing TiO2/glycerol suspension in the flow cuvette (seed 000 Methods).

    ``optical_thickness`` is b = L/l for ONE crossing of the cuvette (L = 100 um optical
    path, seed 000 Results/Methods); the reflection geometry crosses it twice.
    """

    optical_thickness: float = Field(
        4.2, ge=0.0, le=5.0, description="b = L/l, 0 (free space) .. 5; 4.2 is the seed's Fig. 3 sample"
    )
    cuvette_path_um: float = Field(100.0, gt=0, description="flow cuvette optical path, 100 um (seed 000)")
    anisotropy_g: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description=(
            "scattering anisotropy <cos> of ~250 nm rutile in glycerol at 532 nm (Mie size parameter ~2.2,"
            " index ratio 1.84): our estimate g ~ 0.5; sets the diffuse transmission 1/(1+3(1-g)b/4)"
        ),
    )
    tau_ref_s: float = Field(
        0.030, gt=0, description="field decorrelation time at the reference flow (seed 000)"
    )
    flow_ref_ml_h: float = Field(7.0, gt=0, description="reference flow, ~7 ml/h (seed 000 Methods)")
    wall_fraction: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description=(
            "share of the medium's back-scatter coming from particles stuck to the cuvette walls (static,"
            " slowly drifting speckle); our choice - the seed only says it exists and is slow"
        ),
    )
    wall_tau_s: float = Field(
        120.0,
        gt=0,
        description=(
            "field correlation time of the wall speckle: minutes, so that the seed's 5,000-frame (~170 s)"
            " Savitzky-Golay background tracks it (seed 000 Methods)"
        ),
    )
    wall_update_s: float = Field(
        0.5, gt=0, description="the wall speckle is advanced in steps of this bench time (<< wall_tau_s)"
    )
    envelope_spread: float = Field(
        0.021,
        gt=0,
        description=(
            "kappa in sigma_env = kappa * L * (1 - exp(-b)): lateral spread (Gaussian sigma) of target"
            " light that was scattered in the cuvette; calibrated so that the total analytic CRB at b = 4.2"
            " is ~5 um (seed 000 Results, Fig. 3) at binning 4 (32x32) with the default 2 um vibration"
            " added in quadrature: 4.98 um with the earlier independent-cell speckle approximation, 4.76 um"
            " (4.32 um static) with the exact linear bound. See docs/bench-model.md"
        ),
    )
    speckle_model: Literal["pupil", "independent"] = Field(
        "pupil",
        description=(
            "'pupil': speckle band-limited by the imaging NA (physical, grain ~ lambda/2NA);"
            " 'independent': one independent speckle value per camera pixel (the limit in which the"
            " analytic independent-pixel Rician Fisher information is exact)"
        ),
    )


class ReflectionConfig(_Strict):
    """Configuration 1: reflective DMD target behind the flowing medium (seed 000)."""

    laser_power_w: float = Field(0.040, gt=0, description="Thorlabs DJ532-40: 40 mW at 532 nm (seed 000)")
    wavelength_nm: float = Field(532.0, gt=0, description="DJ532 diode-pumped laser (seed 000 Methods)")
    illumination_diameter_dmd_mm: float = Field(
        8.0, gt=0, description="illuminated area of 8 mm diameter on the DMD (seed 000 Methods), flat-top"
    )
    dmd_to_sample_magnification: float = Field(
        0.18, gt=0, description="DMD imaged onto the sample with magnification 0.18 (seed 000 Methods)"
    )
    dmd_to_camera_magnification: float = Field(
        2.9,
        gt=0,
        description=(
            "overall magnification of L2, MO, L3 (seed 000 Methods) = DMD -> camera; hence sample -> camera"
            " = 2.9/0.18 = 16.1 and 0.403 um per 6.5 um camera pixel at the sample"
        ),
    )
    camera_rows: int = Field(128, gt=0, description="128x128 images (seed 000 Data collection)")
    camera_cols: int = Field(128, gt=0)
    camera_pixel_um: float = Field(6.5, gt=0, description="Andor Zyla 5.5 pixel, 6.5 um (seed 000)")
    numerical_aperture: float = Field(
        0.25, gt=0, lt=1, description="Olympus Plan N 10X, NA 0.25 (seed 000 Methods): imaging pupil"
    )
    dmd_reflectance: float = Field(
        0.68,
        gt=0,
        le=1,
        description="'on' mirror efficiency (fill factor x window x diffraction in the pupil): our estimate",
    )
    optical_efficiency: float = Field(
        0.015,
        gt=0,
        le=1,
        description=(
            "beam splitter double pass, lens losses and ND attenuation to the camera; our choice so that the"
            " b = 0 target sits at ~2/3 of a Zyla 5.5 full well (30,000 e-) at 200 us"
        ),
    )
    exposure_s: float = Field(200e-6, gt=0, description="200 us exposure (seed 000 Methods); nominal only")
    frame_interval_s: float = Field(0.0333, gt=0, description="33.3 ms between frames (seed 000 Methods)")
    target_size_px: int = Field(5, gt=0, description="5x5 DMD-pixel target (seed 000 Methods)")
    dmd_center_px: tuple[float, float] | None = Field(
        None, description="(x=col, y=row) DMD point imaged on the camera centre; None = array centre"
    )
    vibration_rms_um: float = Field(
        2.0,
        ge=0,
        description=(
            "mechanical vibration: RMS per axis (x, y independent, Gaussian) of the lateral displacement of"
            " the DMD target's image relative to the camera and the medium, in um at the sample, drawn anew"
            " for every frame (the 200 us exposure freezes it; the 33.3 ms between frames is longer than"
            " the correlation time of table vibrations). Seed 000 Discussion: in free space 'the precision"
            " was essentially limited by shot noise as well as by mechanical vibrations of the experimental"
            " setup', and the CoordConv reaches ~2.5 um at b = 0, very close to the CRB (Results, Fig. 4b);"
            " shot noise alone gives ~0.5 nm on this bench, so the vibration sets the b = 0 CRB: we take"
            " 2.0 um (a network slightly above the bound). 0 = a rigid bench (frames as without the model,"
            " no random draw)"
        ),
    )


class SpeckleSimConfig(_Strict):
    """Configuration 2: blind-SIM with DMD speckle illumination of a fluorescent sample (seed 001)."""

    camera_rows: int = Field(128, gt=0, description="our choice: a 128x128 field (20.8 um at the sample)")
    camera_cols: int = Field(128, gt=0)
    camera_pixel_um: float = Field(6.5, gt=0, description="ORCA-Flash4.0 V3, 6.5 um (seed 001 Methods)")
    magnification: float = Field(40.0, gt=0, description="overall magnification 40 (seed 001 Methods)")
    emission_wavelength_nm: float = Field(
        540.0, gt=0, description="Alexa Fluor 532/533 emission peak ~ 540-555 nm; informational"
    )
    d_sp_um: float = Field(
        0.95,
        gt=0,
        description="speckle grain 2.37 um/eta = 0.95 um (seed 001 Results: LR resolution 2.37 um, eta 2.5)",
    )
    eta: float = Field(
        2.5, ge=1.0, description="eta = d_PSF/d_sp, 2.5 in the seed's experiments (seed 001 eq. 1)"
    )
    macropixel_dmd_px: int = Field(
        8,
        gt=0,
        description=(
            "DMD pixels averaged into one pupil sample (the mask is in a Fourier plane of the sample); our"
            " choice: the pupil then spans ~180 DMD pixels, well inside the 768-row array"
        ),
    )
    photons_per_s: float = Field(
        2.5e4,
        gt=0,
        description=(
            "mean detected emission photons per pixel per second at rho = 1 under the mean illumination;"
            " our choice: 5,000 photons in the seed's 0.2 s exposure (seed 001 Methods)"
        ),
    )
    sample: str = Field(
        "siemens_star",
        description="'siemens_star', 'cells', or a bundled scikit-image picture: camera, cell, coins, moon",
    )
    siemens_spokes: int = Field(36, gt=0, description="rho = (1 + cos(n phi))/2 (seed 001 Fig. 2, n chosen)")
    background: float = Field(
        0.0, ge=0.0, description="uniform fluorescence offset added to rho (autofluor.)"
    )

    @property
    def pixel_at_sample_um(self) -> float:
        return self.camera_pixel_um / self.magnification


class DiffuserConfig(_Strict):
    """Configuration 3: DMD target seen through a ground-glass diffuser (seed 003)."""

    wavelength_nm: float = Field(532.0, gt=0, description="532 nm (seed 003 Methods)")
    object_distance_mm: float = Field(160.0, gt=0, description="u = 16 cm (seed 003 Methods)")
    image_distance_mm: float = Field(100.0, gt=0, description="v = 10 cm (seed 003 Methods)")
    iris_diameter_mm: float = Field(5.0, gt=0, description="iris 5 mm (seed 003 Methods)")
    camera_rows: int = Field(
        512,
        gt=0,
        description=(
            "Basler acA2440-75um (3.45 um) binned 2x2: 512x512 of 6.9 um covers the seed's 1024x1024 crop;"
            " camera binning 2 then gives the seed's 256x256 (seed 003 Methods)"
        ),
    )
    camera_cols: int = Field(512, gt=0)
    camera_pixel_um: float = Field(6.9, gt=0, description="2 x 3.45 um (seed 003 Methods), see camera_rows")
    illuminated_px: int = Field(
        128, gt=0, description="central ~128x128 DMD area illuminated (seed 003 SI, Fig. S6)"
    )
    target_px: int = Field(64, gt=0, description="targets are 64x64 arrays on the DMD (seed 003 Methods)")
    diffuser_distance_mm: float = Field(
        40.0,
        gt=0,
        description=(
            "ground glass this far before the image plane (our choice): the scattered halo (~0.5 mm rms) then"
            " scrambles the ~1.1 mm illuminated region (0.55 mm targets); kept below N*dx^2/lambda = 46 mm"
            " so the Fresnel transfer function is sampled on the 512-point grid"
        ),
    )
    diffuser_corr_um: float = Field(
        40.0, gt=0, description="phase-screen correlation length (our choice, ~6 grid samples)"
    )
    diffuser_phase_std_rad: float = Field(
        4.0,
        gt=0,
        description="phase-screen std >> 1 rad: no unscattered light, fully developed speckle (our choice)",
    )
    gray_model: Literal["bitplanes", "amplitude"] = Field(
        "bitplanes",
        description=(
            "'bitplanes': an 8-bit picture is 8 binary bit-planes shown for 2^k time slots (DMD PWM), the"
            " camera sums their speckle intensities (exact, 8 propagations); 'amplitude': one propagation"
            " with field amplitude sqrt(gray/255) (fast approximation)"
        ),
    )
    photons_per_s: float = Field(
        5.0e5,
        gt=0,
        description=(
            "mean photons per camera pixel per second for an all-on illuminated region (our choice: at the"
            " protocol's 10 ms exposure the speckle peaks of its targets stay under the 30,000 e- well)"
        ),
    )


class BenchConfig(_Strict):
    """The whole virtual bench: which configuration, its seed, and every section."""

    configuration: Literal["reflection", "speckle_sim", "diffuser"] = "reflection"
    seed: int = Field(0, ge=0, description="one seed for every random draw of the bench")
    dmd: DmdGeometry = Field(default_factory=DmdGeometry)
    medium: MediumConfig = Field(default_factory=MediumConfig)
    reflection: ReflectionConfig = Field(default_factory=ReflectionConfig)
    speckle_sim: SpeckleSimConfig = Field(default_factory=SpeckleSimConfig)
    diffuser: DiffuserConfig = Field(default_factory=DiffuserConfig)

    @model_validator(mode="after")
    def _check_sample(self) -> BenchConfig:
        from devices.bench.samples import SAMPLE_NAMES

        if self.speckle_sim.sample not in SAMPLE_NAMES:
            raise ValueError(
                f"speckle_sim.sample={self.speckle_sim.sample!r} is not one of {sorted(SAMPLE_NAMES)}"
            )
        return self

    @property
    def sensor_shape(self) -> tuple[int, int]:
        """(rows, cols) of the full sensor for the active configuration."""
        section = getattr(self, self.configuration)
        return (section.camera_rows, section.camera_cols)
