/*
 * bcryptprimitives.dll for Wine 8.0 (Debian bookworm), test use only.
 *
 * Rust's std on Windows draws random bytes from ProcessPrng in bcryptprimitives.dll,
 * which every Windows 10+ ships but Wine 8.0 does not, so flor.exe cannot load under
 * that Wine. packaging/tests/test-msi.sh builds this file with MinGW into the test's
 * throwaway Wine prefix (never into the MSI) so the installed flor.exe can run there.
 * It fills the buffer from advapi32's RtlGenRandom, Windows' older system CSPRNG.
 */
#include <windows.h>
#include <ntsecapi.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
	while (len > 0) {
		/* RtlGenRandom takes a ULONG length: feed it in chunks. */
		ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
		if (!RtlGenRandom(data, n))
			return FALSE;
		data += n;
		len -= n;
	}
	return TRUE;
}
