/*
 * bcryptprimitives.dll for Wine 8.0 (Debian bookworm), test use only.
 *
 * Two things every Windows 10 (2004+) has and Wine 8.0 lacks, which flor.exe needs:
 *
 * 1. ProcessPrng. Rust's std on Windows draws random bytes from ProcessPrng in
 *    bcryptprimitives.dll, which Wine 8.0 does not ship, so flor.exe cannot load.
 *    This fills the buffer from advapi32's RtlGenRandom, Windows' older system CSPRNG.
 *
 * 2. The IP_RECVECN / IPV6_RECVECN socket options. quinn-udp asks for ECN reports on
 *    every QUIC socket and gives up when setsockopt fails; Wine answers WSAENOPROTOOPT.
 *    Because std loads this DLL into every flor.exe, its DllMain rewrites the program's
 *    import entry for ws2_32!setsockopt to a wrapper that reports success for those two
 *    options only (flor then simply receives no ECN marks, as on a path without ECN).
 *    Every other call goes to Wine's setsockopt unchanged.
 *
 * packaging/tests/test-msi.sh builds this file with MinGW into the test's throwaway
 * Wine prefix (never into the MSI) so the installed flor.exe can run there.
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <ntsecapi.h>

/* Windows SDK values; MinGW's headers may not name them. */
#define FLOR_IP_RECVECN 50
#define FLOR_IPV6_RECVECN 50

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

typedef int(WSAAPI *setsockopt_fn)(SOCKET, int, int, const char *, int);
static setsockopt_fn wine_setsockopt;

static int WSAAPI setsockopt_with_ecn(SOCKET s, int level, int name, const char *val, int len)
{
	int r = wine_setsockopt(s, level, name, val, len);
	if (r != 0 && WSAGetLastError() == WSAENOPROTOOPT
	    && ((level == IPPROTO_IP && name == FLOR_IP_RECVECN)
		|| (level == IPPROTO_IPV6 && name == FLOR_IPV6_RECVECN))) {
		WSASetLastError(0);
		return 0;
	}
	return r;
}

/* Points every import of ws2_32!setsockopt in the program at setsockopt_with_ecn. */
static void patch_setsockopt(void)
{
	HMODULE ws2 = GetModuleHandleA("ws2_32.dll");
	BYTE *base = (BYTE *)GetModuleHandleA(NULL);
	if (!ws2 || !base)
		return; /* the program does not use sockets */
	wine_setsockopt = (setsockopt_fn)(void *)GetProcAddress(ws2, "setsockopt");
	if (!wine_setsockopt)
		return;
	IMAGE_NT_HEADERS *nt = (IMAGE_NT_HEADERS *)(base + ((IMAGE_DOS_HEADER *)base)->e_lfanew);
	IMAGE_DATA_DIRECTORY dir = nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT];
	if (!dir.VirtualAddress)
		return;
	for (IMAGE_IMPORT_DESCRIPTOR *d = (IMAGE_IMPORT_DESCRIPTOR *)(base + dir.VirtualAddress); d->Name; d++) {
		if (lstrcmpiA((const char *)(base + d->Name), "ws2_32.dll") != 0)
			continue;
		for (IMAGE_THUNK_DATA *t = (IMAGE_THUNK_DATA *)(base + d->FirstThunk); t->u1.Function; t++) {
			if ((void *)t->u1.Function != (void *)wine_setsockopt)
				continue;
			DWORD old;
			if (VirtualProtect(&t->u1.Function, sizeof t->u1.Function, PAGE_READWRITE, &old)) {
				t->u1.Function = (ULONG_PTR)setsockopt_with_ecn;
				VirtualProtect(&t->u1.Function, sizeof t->u1.Function, old, &old);
			}
		}
	}
}

BOOL WINAPI DllMain(HINSTANCE inst, DWORD reason, LPVOID reserved)
{
	(void)inst;
	(void)reserved;
	if (reason == DLL_PROCESS_ATTACH)
		patch_setsockopt();
	return TRUE;
}
