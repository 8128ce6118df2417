# The lab site (lab/): three controllers in network namespaces on one machine, bridged on
# 10.213.0.0/24 and fd00:213::/64 (dual stack). Same keys as a production site; only names,
# addresses and secrets differ. The clusters and backends run on the first network's family
# (IPv4 here); the public VIP answers on both families (one VRRP instance each).
openstack_ha:
  site: lab
  network: [10.213.0.0/24, "fd00:213::/64"]
  controllers:
    - {id: lab-ctrl1, address: [10.213.0.11, "fd00:213::11"]}
    - {id: lab-ctrl2, address: [10.213.0.12, "fd00:213::12"]}
    - {id: lab-ctrl3, address: [10.213.0.13, "fd00:213::13"]}
  vips:
    public:   {address: [10.213.0.100, "fd00:213::100"], interface: eth0, vrid: 51, fqdn: openstack.lab.example}
    internal: {address: 10.213.0.101, interface: eth0, vrid: 52, fqdn: openstack-internal.lab.example}
  galera:
    enabled: true
    cluster_name: lab
    vip: internal
    sst_password: lab-sst-secret-0001
    monitor_password: lab-monitor-secret-0001
    root_password: lab-root-secret-0001
    databases:
      keystone: {user: keystone, password: lab-keystone-db-secret}
    # Replication, IST and SST over TLS. A lab-only CA and keys (10 years), like the lab's
    # passwords: never use them anywhere else. See README "Galera" for a real site's.
    tls:
      ca: |
        -----BEGIN CERTIFICATE-----
        MIIDKzCCAhOgAwIBAgIUJsrwDs2GQlq592trU9vFTa9jFKgwDQYJKoZIhvcNAQEL
        BQAwJTEjMCEGA1UEAwwab3BlbnN0YWNrX2hhIGxhYiBHYWxlcmEgQ0EwHhcNMjYx
        MjAzMTcwNTI4WhcNMzYxMTMwMTcwNTI4WjAlMSMwIQYDVQQDDBpvcGVuc3RhY2tf
        aGEgbGFiIEdhbGVyYSBDQTCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEB
        AKAbWVunzSAL9khrg4NMRn+I3LbAB+4vWyRrjhaY3Ho6ExYTgFSvDSFtkgRYDwBJ
        rNROXeTc5TWk5DhBL5tx+s94ESDBsGKPwkQ4qQIBW9ODqqDZbUNJBaxjRBSWQrVl
        lrrMhchl33osIRTzv0IuOuMKwaJhRfBExPhAPhMXWLLKngXXd7EtvPK3q1vgKxBc
        T1jvjj2pqcHmDyG/w8fUSAuFphIzaGi87Qh/LT748SWTNbZxjmRMtYmVb/DjmN1U
        G5CWKCO+ndDJH/RW9IcwXoU9Yb/mSE217OFx6x7Xhmd0VHkfeZ7RAgM1wzHD6ETW
        v7/ieNgcmedA85E2iZ6dAZ8CAwEAAaNTMFEwHQYDVR0OBBYEFEazigC5gsgztmuz
        MU+Lde6XNeMzMB8GA1UdIwQYMBaAFEazigC5gsgztmuzMU+Lde6XNeMzMA8GA1Ud
        EwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEBABMuKRFp57r4A27b40QMdxNe
        VA8qMtqxrZOA4Xd+aZavlx96SyVm0tFARWg1hfqN0EjBoS8IbDLOGVm/ULzYm7n5
        RS88v2G+JP9Z8h+xAv/+uiOMYH7qAsEmuyJn/ITxLQIiP7lMLLdCS+bwvkIla6jd
        ef8202zMWYCsqPJRaKyTb4B1PmJhFLxgCuWUv6n9lPshCnw0Izv2BmIHLyPCSHfn
        LLTdFRfgaVOhkWajDOsWJ2PYvw5HohiyfsM05hM40NAQ072O2NOspniJgrOvjTPH
        Ik3xb4gnafqDJcj5dWc99gafzLMGp7NgiHi0G+x0hu9JoziqIy2QrTpg1gdEmnI=
        -----END CERTIFICATE-----
      nodes:
        lab-ctrl1:
          certificate: |
            -----BEGIN CERTIFICATE-----
            MIIDJTCCAg2gAwIBAgIUAqpd479IMgLdezdTHLHgji4RNEowDQYJKoZIhvcNAQEL
            BQAwJTEjMCEGA1UEAwwab3BlbnN0YWNrX2hhIGxhYiBHYWxlcmEgQ0EwHhcNMjYx
            MjAzMTcwNTI5WhcNMzYxMTMwMTcwNTI5WjAUMRIwEAYDVQQDDAlsYWItY3RybDEw
            ggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQDYIM8aVsTI2nXPI00Js4gq
            InnwqNyi9xnG/2R0jRw+9CxvuyC6oMf//RrGxXq64Kzomx9b5es+rMFQtJ28e9v0
            bpTh091ivWQsj2KbRGJvEFXAkXu3AvKNFUz7LjA0RttRvz0tciQC7cixCyV8tjBU
            fc7p4hhk/lXoiD0qxupTS41B1sbYFDvJh3APWdV0YkgWK1DbJHa3LS68hYcRsLns
            ZxK+X64YzZ/n0jXSLGLnzNyNiETTY4dKjTTpO5euD25fAV84aM4jdBCZnb1WbCq3
            FmRj/4iUtuiqBtqi+bMWGPlMaUSi8TsBd52ljMyPN6x4vM6UhueHxpb+1yVNlQ4d
            AgMBAAGjXjBcMBoGA1UdEQQTMBGHBArVAAuCCWxhYi1jdHJsMTAdBgNVHQ4EFgQU
            kURH01ao7iDVleza0g+U8PWq1fEwHwYDVR0jBBgwFoAURrOKALmCyDO2a7MxT4t1
            7pc14zMwDQYJKoZIhvcNAQELBQADggEBAD79smZbGDfzkTMF5vNBrShB466OeEZF
            ltnXsBSAXT0LHm1l0AxR9cbnWPx71KrBuhAjkKkUCxYS7NXBCbI7LtrT1UZNnvHj
            rXWJ198x0Tvp5BCONrp2DSOB0gqeSNCUsiAADqRMRK4JGz8C1he9+oxupU58wp74
            85yUOWCOyZ+TPjohc8rkKErAPUtYWz2JexWm7REb7ouaYXpd5Mu1mHyuMAUdJywf
            RCw0iNi0r29vedTiBy5EymQd9gmrSbm6wS+Hgo1Q6pKd97X9pfODsyzARi+hSLZT
            3RmZl7sWikQ0QE2E5LreHfRhDZknI4wnp5GqLBPyhDrlZumSOvIpZ/o=
            -----END CERTIFICATE-----
          key: |
            -----BEGIN PRIVATE KEY-----
            MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDYIM8aVsTI2nXP
            I00Js4gqInnwqNyi9xnG/2R0jRw+9CxvuyC6oMf//RrGxXq64Kzomx9b5es+rMFQ
            tJ28e9v0bpTh091ivWQsj2KbRGJvEFXAkXu3AvKNFUz7LjA0RttRvz0tciQC7cix
            CyV8tjBUfc7p4hhk/lXoiD0qxupTS41B1sbYFDvJh3APWdV0YkgWK1DbJHa3LS68
            hYcRsLnsZxK+X64YzZ/n0jXSLGLnzNyNiETTY4dKjTTpO5euD25fAV84aM4jdBCZ
            nb1WbCq3FmRj/4iUtuiqBtqi+bMWGPlMaUSi8TsBd52ljMyPN6x4vM6UhueHxpb+
            1yVNlQ4dAgMBAAECggEAHK1HxYsnS64+7PfWYDfn1I1kCCRjuCTY0QBwnA1gJtM/
            tSiLaG/ucZ8sBx1LUlH+51Mz1z3714JVGSgJ+OknT3i/vPIfYRtXmBkDYK4zcGCm
            vCkhlPApbkJaB0cC4uDW93MMQ0Qulovl8eXUeMZ0xbU2t+5FxdrAW9z93rfrfhcc
            +hGZl0Imi54GeFfi7WH/Wtj7MESZO1p6581+8gQIQCLScIz1E++WpdsFaLIqzFsB
            sGlsm7GP2qABHUD11RrffjIPI8MvRbPYLKKjsHuEBxQ+vZncC1RXabU27BYVeQ1V
            ZiFvk5Nowgo1yvAC/YTIwTjk/0Hv5ypYG2xdMGfYUQKBgQD4Aw8GDSSx+5levaGh
            IXhX1gqQnWeCYGM/OFp5Jaejt09yOm4mek2tTWxJ1E2y8dL92zPJQlGvzuwICdqk
            nNzktmFTPN1T4bNCJDg4kPs5PnVJpjp27bWcDXWvSItuatApi0hdRSlUaH9uqQvc
            o6h7+hJNaXso+MgV3TCoPrjzkQKBgQDfFtua/xD1Rf190MzThpNGm+Vtz2PIHVxJ
            jJdAqTNkHVFP0zSYzsTCq2yLm2+kHjnPwiSkg4eg4a3TybOZS91YA5ecHfrNeo+Y
            Jn0vmUSuLx4nnknaMJhAWxqtn03+Rlsw0Wu/f1AlJMPBpJ/o64OzLWLVp9ApPrKS
            TTbsb2JTzQKBgEhD2+TPf5m8zfulFat1rTMq0vlAZCDBJSoOqY4TQr2ZdDS8gcwE
            Zw3QOXVpvxodDHWboYNLJ7IqgOv2sxaz/klGOyWd3n/KjAkBtMAGvqz3XgWPwglV
            Sk2mPlxMrxQFW5I/W16SAHDv4fHEoAgyR62YOC0GRzSxCNwWD092tz2BAoGAYalO
            BfJ3aAh1ymhn4ondW2HP9Fx/4BEKX6BObp4jw0YaXImnUuXhuR72a79mBkC9Kjhh
            diumakWhpT99gjR195vK+SseqmlnB0KCNx4vtNknqExhJEV1wWagrTU6HYCLVzm2
            o6SGX1xS3ijFYGAJzZym0cWfGQ87eVSYILU6JFkCgYBI0yCFlwVRUDRZgg81orfM
            0zczKv4vSwCipV/fHdrv2iAfocJVzyvi4UgDL4VRQ4sg02j6d3h55x07R3QTAzuC
            N5YGx/RIhbSTMauj6Csl49zt2VNDX5KzJThGBJ10Q22bvacxDmRXLAF3y3QfgOuz
            TV6q8/NsJgcra5U2VTQiRg==
            -----END PRIVATE KEY-----
        lab-ctrl2:
          certificate: |
            -----BEGIN CERTIFICATE-----
            MIIDJTCCAg2gAwIBAgIUAqpd479IMgLdezdTHLHgji4RNEswDQYJKoZIhvcNAQEL
            BQAwJTEjMCEGA1UEAwwab3BlbnN0YWNrX2hhIGxhYiBHYWxlcmEgQ0EwHhcNMjYx
            MjAzMTcwNTI5WhcNMzYxMTMwMTcwNTI5WjAUMRIwEAYDVQQDDAlsYWItY3RybDIw
            ggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQC3+mSoJSjiZBnklTY5/nk+
            SVpGfY4YBThnSCAYGrAkW2UHtsc1pDBbkV1PIVl0P2FP56LWq5hDFgUJVb5xbXcJ
            ATI7/wLaZXG7K2cuJpBKwxAZTEg4xvSIihveMGh3VEGCPW9/S6eUEvA8LkH0kwFA
            j50jaM8NaoLbJodF06uzDfFarI+ZOMLlZO2L5OfJrEYNK+92KkLMVz2la+EupjRf
            0GixnLrXyKut7V7omh4b8qRC5OqkiEOJlVbqBuOUtrMkqojMA++T5HLfWGNQSPoE
            hFWjryCIjTjeYdPVqvsPitMI5tFd9O+n68BLEgMwaIVZ6D+kyC5QKiZsTHACuPrt
            AgMBAAGjXjBcMBoGA1UdEQQTMBGHBArVAAyCCWxhYi1jdHJsMjAdBgNVHQ4EFgQU
            M1SMf4AN36kTmQY1l9W22FOBxhgwHwYDVR0jBBgwFoAURrOKALmCyDO2a7MxT4t1
            7pc14zMwDQYJKoZIhvcNAQELBQADggEBAF5pVVDeMsqP2m5+qLnyIq5Ia8I1bA9W
            phQZGvTeCE1h/I84+UYFNvTSNqIGi8Op/ketA7sBbfBGgSsF08gh4xlCWqPDjvEF
            d/SZyseVotN3n5S44wZnWL93+fGH1HW7QAYoixL7T9IrhHQ5cLwN+0Nc+6moIdWt
            xttS6i3e3+4d35HrS8R1oeYDYAdzgJCVyLMtFsJtvOYIiSvITOLb8/FOw7jZLx2B
            WTB87OHZy4V280fq2ZStxGrmp5pgdgLvXH1zi4OHmPJohuewQkjsGNsOiPemAakP
            xmuip0+LWOPvQaHsHR2w9gb1W+VVu8zbZendq5QSGhoG0S0uQiQK2mA=
            -----END CERTIFICATE-----
          key: |
            -----BEGIN PRIVATE KEY-----
            MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQC3+mSoJSjiZBnk
            lTY5/nk+SVpGfY4YBThnSCAYGrAkW2UHtsc1pDBbkV1PIVl0P2FP56LWq5hDFgUJ
            Vb5xbXcJATI7/wLaZXG7K2cuJpBKwxAZTEg4xvSIihveMGh3VEGCPW9/S6eUEvA8
            LkH0kwFAj50jaM8NaoLbJodF06uzDfFarI+ZOMLlZO2L5OfJrEYNK+92KkLMVz2l
            a+EupjRf0GixnLrXyKut7V7omh4b8qRC5OqkiEOJlVbqBuOUtrMkqojMA++T5HLf
            WGNQSPoEhFWjryCIjTjeYdPVqvsPitMI5tFd9O+n68BLEgMwaIVZ6D+kyC5QKiZs
            THACuPrtAgMBAAECggEAV3vB/HC7GbgG1fqb8ATRK2ye+FEAzexBj18tH7klFAy/
            pGTmIlxCQHCFobiWfGAdCm13scOj4hao63Dx36bxSP9gH0ZaWXaOl7WCWWAuEdbi
            o1zyJMl6gyjFKqjzK/cNNXy4NZxIgfFlegB3DXEP0d7YlntipZsFwWb3QR1vknLa
            8Upa5VNEJ//2r7ebqwpgWuOp1dU5Cz3KpwubI2H9JuNBkOhKCNsYx4FY9pffkOO0
            iFsWjIgoHdw7FUjN+DpHN5NCw+ga5OH3T4v5LtZ7OsXAvXM/74NVuA+j9SDgOWOP
            z9fIRpEyywowVsIpDTg12QAOGqObj4HwdS31BTF3MwKBgQDaQJwXo2sRHOAyakJV
            mJDoeVW2pIGEZGU9NoqlfgvixFJTzjy2RujoLrcG04u/FkNpUyLF13KGuaCbrezg
            oqxgP6nF61L5j03d96Tnho1Vz1s0OJ8TyKtnJUOFhX6u2LgY7RoclLA0P9NWaUd6
            cRQfa4bnxMFnXYUDo/SfWBFiuwKBgQDXzD9uQ+qGNL0Lq9qTc5nJgCNA+etK2X++
            Z4aHU8AluauL48AB7YPEBIlUYcqWAWHA6QRmh8V4Wb44BlU82McpGm+YhnYtj927
            ZjSrtdK9oEbiXDbykSeKOAIspJKXy7idYvR13/dNE516GB6MQIAL794vlqNsHuGl
            Wtl3eEHidwKBgQC07j74sbb+tst9v+1B/HqU3pGaGgJs+LWc62xBCZ9c3JfLdfuK
            uHo4kRGWDSWawiAcXplDHfqJibWFmcf36aOxHtXlh9J/pLdOvg/tB/R/IKlhP1dR
            FVhS5+dz91kwJeVodJbi/riceBUBW8Gv1bJy4bcyyD/1KugsPm16841mJQKBgQCD
            nJwrAdztEQkjLyLVvzFSBYZ6wHHSaqhQVg9kRZ3w5DZN0Q9vnY45ZJLlFedaaWlX
            IEaAydmTtxgeTy55N7TvyqG5Ini8/Ps8qe8Bspje8fuJXrhcZE77K4GX/J8zWRo1
            Uv7JTVkkdwwaRM+MtmHh5d9aosL01DjGgowTIxL7rQKBgQDWCmiE+4ZOZJ5e6WJV
            pezMr51bYiBDCL6x0l75zhrUycy4Jw7KE+o1I+5Djn/XE+gL97GURWpn5nGpJTCa
            KuDhUJQ3vdEF0rWNpNFh1bSLQ3mJG9SRU3YQBRiMYptRoEOztJ992ODoRaxhBpRm
            3VjS9pAADdyErO5D9noE4ncoXw==
            -----END PRIVATE KEY-----
        lab-ctrl3:
          certificate: |
            -----BEGIN CERTIFICATE-----
            MIIDJTCCAg2gAwIBAgIUAqpd479IMgLdezdTHLHgji4RNEwwDQYJKoZIhvcNAQEL
            BQAwJTEjMCEGA1UEAwwab3BlbnN0YWNrX2hhIGxhYiBHYWxlcmEgQ0EwHhcNMjYx
            MjAzMTcwNTI5WhcNMzYxMTMwMTcwNTI5WjAUMRIwEAYDVQQDDAlsYWItY3RybDMw
            ggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQDp9ybV521U4uFqjlKR3ph5
            ApsjXRZEj8hV+bypE562ZmXNEI6rXeclyQosRcVt2/n3pHoIzpZWFIu2nYzm268+
            gwqFchjHduoPtMwW724en5DvDcXqjy22fqyeHZIag1LvxlBHlagxbhVqO/uk6Qgo
            zwZXCfQb7p33OJ69/qxpbMYSogJFCJ2r4h1FMU4od6cIlxhmqswO1NbwAfEs8Det
            YDRtjtmEhll2hSpdUCOcAky2nxcFL+5cCJCl0mFgggLK+NYEqBVSO1Lyfwu0G86E
            1VYvigQbcenY3uoKDWo8P6bDfT5PO/ggdqxw8/V2o09Y2it4Fng/h/59ulRGWvKh
            AgMBAAGjXjBcMBoGA1UdEQQTMBGHBArVAA2CCWxhYi1jdHJsMzAdBgNVHQ4EFgQU
            X2HfH41+4V5jVMY7VIm/cURPiRcwHwYDVR0jBBgwFoAURrOKALmCyDO2a7MxT4t1
            7pc14zMwDQYJKoZIhvcNAQELBQADggEBAHbvuJbpUI4+68S4R2v5v33KHs+tx25Z
            ajnO66iaU6lfKLLlW+dvakfEvETfcm1H8AQdwM0vKt0x4RJGBzhmX0Od2cacVHa1
            izrDddKiS/3Uag3PRggy/LwkGya+jYD35b30uOBfPqafungFDBaiPozcnKmfueAS
            j7abALLCBT6oxddfz8/ortakJjI2KkjkaoFVAKEn21KYMwD/QTjcU/2km9RlVe8+
            B3d8fDV6/MwU66+1Mn8KLeCCOI3PikAvDKCP0h3oCMtOcC4r2oy1K4VLE9FIUZIA
            9GOjmJsoTdL+ieMwY3EcGaus5VMTBTp+VhKBM/0ZM2Z+PewA4GJQfhQ=
            -----END CERTIFICATE-----
          key: |
            -----BEGIN PRIVATE KEY-----
            MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDp9ybV521U4uFq
            jlKR3ph5ApsjXRZEj8hV+bypE562ZmXNEI6rXeclyQosRcVt2/n3pHoIzpZWFIu2
            nYzm268+gwqFchjHduoPtMwW724en5DvDcXqjy22fqyeHZIag1LvxlBHlagxbhVq
            O/uk6QgozwZXCfQb7p33OJ69/qxpbMYSogJFCJ2r4h1FMU4od6cIlxhmqswO1Nbw
            AfEs8DetYDRtjtmEhll2hSpdUCOcAky2nxcFL+5cCJCl0mFgggLK+NYEqBVSO1Ly
            fwu0G86E1VYvigQbcenY3uoKDWo8P6bDfT5PO/ggdqxw8/V2o09Y2it4Fng/h/59
            ulRGWvKhAgMBAAECggEAFfSRemU7R0n7KUqtyO6AlGqAMHNd0ZVEkXzcDWm/7RHy
            36l8Gey38j3JbJonisWn0Wtn4Eeyp+VJrxtdy5Q1/8HATQGF/cHU+SBYPpa9WLZU
            nXpHZlmFSqjcfgH8YeyM7d9ITU9n9yuDavKyDKmpkFrNF4HhnHVp8Xcovl+Vwla6
            zj9vz6N0NoFN2As+4988tz0pRpJlnD/IsJ71NkbFziyLx+OTnQ+ntV3jjpeuqpn4
            nwofMT+V5bo4AgAYfvmzizlxBQHBdAH2QHeWuyB+70yF4t3Zo+t6v37mOD5c/nO5
            HapcLIP2kMz4LHcklh9RIuyxnuog0Vpdl2XKvKwleQKBgQD/YiNoRH0NxjILH4bw
            B9vTWrHA2ua8743tqJpS5LoxpSAsOcOkHW0xx2tchybic+Y6l0rDN+g7zrYUXSk6
            Cw4hpzIEGpkApHxi288XjK8nymIBgKtNWeJUBCP0u8NE03hGxEOwESkFD4Q5pp31
            1APcZ2XAG3vntilKM+Ui6wn4OwKBgQDqh8YyJF/HGFM697+O3dXUPgKgEdC0rv7G
            oRT0usQ28eyIOdCOtKLntDIoj62n9gxzptUxHKuNXfJsdPJPv+x9ctM24V5RS8hV
            o2PPvjndbvanNhUObhiBz1VnEFNrOUuY4jESE8a6lus/h9iTxW0cxGwnnGKhYAcV
            dBE2P85u0wKBgB6R+9UOZb3RXMoyEvAGsMzDDYYdbgNt1Zp+VULY+GTa9Ff27jFm
            CF0uFu7zircO0p9u3tcxiQ4nt2oGoNm+2wkyP214VZpbFjyrPUX/ZDQqKMMvSNIw
            kUQnXrp8A2rouXwXIFciJrvhWJ2iEUSNBY1Ln0V4xMM+7gBg5+vfIMljAoGBAIk3
            tzZPIdqS2N9/ZIxqLllnjpGo2rtcR6RfSquFOpgLI6Dwcp2MAmQegdpJdgj3ZIGl
            8sYxSA4GEXhzU/JlEDC1pe5OHaji9etlFVjOq3xrF9TtR5SRxbTtYcJTQvtRInHo
            pV02ROeWtT0OdiC/Of/CzKTAUtSoInzi088xtc4RAoGAMqpiqQOdDjyYdiomJV//
            ig+6g01esrGAsNR+O9fEZtvM3sGM+yDD0R4/9d6Fg59qQPeyxrBCMhMWztZ1Q7GP
            327cUfwWDiE7Mn8/kKFL6bw85uxIEJPGce8EL1RGFLZ0D1Gumg2dLGYrJpIJc9RT
            +9LfNyeYZkbL18OoErSQRyg=
            -----END PRIVATE KEY-----
  rabbitmq:
    enabled: true
    cookie: LabErlangCookieNotForProduction
    users:
      openstack: {password: lab-rabbit-secret-0001, vhost: /openstack}
    policies:
      notifications-ha:
        vhost: /openstack
        pattern: '^(notifications|versioned_notifications)\.'
        definition: {ha-mode: all, ha-sync-mode: automatic}
  keystone:
    region: lab-r
    scheme: http
    endpoint_mode: vip
  haproxy:
    stats: {enabled: true, port: 8404, user: admin, password: lab-stats-secret}
    # The stand-in APIs answer in milliseconds: a request still unanswered after 10 s is hung,
    # so a POST stuck on a stopped backend fails (504) in 10 s instead of 120 s.
    timeouts: {server: 10}
