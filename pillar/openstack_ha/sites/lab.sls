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
    # passwords: never use them anywhere else. See README "Galera" for a real site's. They come
    # from lab/galera-tls/ (the CA's key and the spare lab-ctrl4's certificate are there too:
    # a controller replacement brings lab-ctrl4 in with its own certificate).
    tls:
      ca: |
        -----BEGIN CERTIFICATE-----
        MIIDKzCCAhOgAwIBAgIUMtMmU9bb+sU6E+f7PlmYi82VC2wwDQYJKoZIhvcNAQEL
        BQAwJTEjMCEGA1UEAwwab3BlbnN0YWNrX2hhIGxhYiBHYWxlcmEgQ0EwHhcNMjYx
        MjAzMjMxNjA5WhcNMzYxMTMwMjMxNjA5WjAlMSMwIQYDVQQDDBpvcGVuc3RhY2tf
        aGEgbGFiIEdhbGVyYSBDQTCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEB
        AJqHkethefoOlis/ddX7m7fPhVFlK30iUy1go7EC1k3RW1ZcVWqlvhw4QP3dxsZQ
        +Gou0ljeEijHvxj1IoPM7Kw3JB4BLVxs2uX2f26EXlVGANehBuQro7fGksd9Wnpj
        moFC+v5+Til53D4wPO2dQqWnRR5S+Ug8QHhLOPCDzjJd+E7rCA8tiZdX4rcAFeif
        +ENJpjyS9wyajHwozkSpdHlMBj1aMn8oveNh/RrHpG9SXz4g/s71+2y3LlNVSV65
        FsqOkZ7PfFLudu9NYqh0ABftG58h7BY9GFbE/bXjtPQ+CTbpOQNLWDqnsvdnVACM
        0TAHZf8tMHKaQTN0UliJiXMCAwEAAaNTMFEwHQYDVR0OBBYEFHnrq8s4YljBVEIx
        fhazdpYPxPwFMB8GA1UdIwQYMBaAFHnrq8s4YljBVEIxfhazdpYPxPwFMA8GA1Ud
        EwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEBABtu731AcxyMXw0G1YYkMXl2
        ynATPAjCakzcp9jmeCAukWSLDWGRcP06zi1D88+0fovIOXM/N/QqkbbdGbhDm4GK
        a3ZaqngzPCF7/ExAQ7uUw1kmE8sIY6qprUFoWBxOvk2+gxGJ4xLJZWJLNnIKL1M/
        F6PcY75EH8gbyvjEH1EW0+EywmZWjxbGC/iEIs5sFyS1R1lC0ksBW4AILQqTw9CX
        kK2l4C/MpcVBsA+OrsLjSqrcOCq0MX1jU8SGDEiNeaaUshq3Ic30wA0F+Jsa+870
        SzqOn1dZpx+W6HxiT7AJWUytqgaslCVXo6ZTagIgfnJtsGe37x+nvrzeHNtbFDM=
        -----END CERTIFICATE-----
      nodes:
        lab-ctrl1:
          certificate: |
            -----BEGIN CERTIFICATE-----
            MIIDNzCCAh+gAwIBAgIUA3B0vx/090lpqagclNb0enjHoUkwDQYJKoZIhvcNAQEL
            BQAwJTEjMCEGA1UEAwwab3BlbnN0YWNrX2hhIGxhYiBHYWxlcmEgQ0EwHhcNMjYx
            MjAzMjMxNjEwWhcNMzYxMTMwMjMxNjEwWjAUMRIwEAYDVQQDDAlsYWItY3RybDEw
            ggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQCTFiXsXY3+/2v4FVvxH/Pu
            dph2xxJC2iPQ1y21NBlU5oCA90aGzb5C/4HZvsABwjH5ygatRPmGxe1Nbtv4kYpS
            kfvvJT7fkUfoJi2zuzcdnVmsKaVOOP4HnMZjWHaoLOvBGIFuG17/Yx4NxxvfVTVd
            WhACnun1XmUiTgnHnYNsbUrJGtGsCAm94R0P+nkc7XB9tK6zRyyfhLJQeviHKl7i
            OdtfHoURQULBv0/ZLCcU97sEakQlrtjGJsmMYxogmsqEbnohog0QObTghSGvVaPW
            6UvnrTT/0O+u+hUCa0zg2jiotUWZZT7M3s7SzBD4bW4nO5nEclBTw8Tehgwtxi6P
            AgMBAAGjcDBuMCwGA1UdEQQlMCOHBArVAAuHEP0AAhMAAAAAAAAAAAAAABGCCWxh
            Yi1jdHJsMTAdBgNVHQ4EFgQUjSMRthEWqk6H5o2O/iIvFiqcLIowHwYDVR0jBBgw
            FoAUeeuryzhiWMFUQjF+FrN2lg/E/AUwDQYJKoZIhvcNAQELBQADggEBACmfeoYG
            kzVZzEQ3bhnm8Q/sfjUcgBTFpRNS+BB5lCc6tA1dgNtnluuGZLpqfa6/qSYvR3Aj
            /KNCeOqVMNK/2HvW3zxjUNui8TcHQJ411iJZVKvCiNjW13b6sU4jtXtNT2f1lydj
            mTpOirSloi/KAwYTVUrQQRLY1Ow7ffRQu6z/z/jEuaXC8H6FOMD0y99cuj/Xqz7V
            PzxDgr1Ux/hASX6QQG8VNym841HfKzPkyJ1UoIMedNU9lUXAR9wk4JYUHj0oORnx
            VJiXT9J7GNnA3rn3Hd6zQcyCqjTllmpd4GLmWaRVBQQZtZuLGcYCzTvkBqCCbUGZ
            TtK5+wD7DUEpDpY=
            -----END CERTIFICATE-----
          key: |
            -----BEGIN PRIVATE KEY-----
            MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCTFiXsXY3+/2v4
            FVvxH/Pudph2xxJC2iPQ1y21NBlU5oCA90aGzb5C/4HZvsABwjH5ygatRPmGxe1N
            btv4kYpSkfvvJT7fkUfoJi2zuzcdnVmsKaVOOP4HnMZjWHaoLOvBGIFuG17/Yx4N
            xxvfVTVdWhACnun1XmUiTgnHnYNsbUrJGtGsCAm94R0P+nkc7XB9tK6zRyyfhLJQ
            eviHKl7iOdtfHoURQULBv0/ZLCcU97sEakQlrtjGJsmMYxogmsqEbnohog0QObTg
            hSGvVaPW6UvnrTT/0O+u+hUCa0zg2jiotUWZZT7M3s7SzBD4bW4nO5nEclBTw8Te
            hgwtxi6PAgMBAAECggEAF8uk/fzSrJbQ9lUqRzOmqIUKPGkPVL5qve4Z6G9Ry9Dw
            qCyY/dUKO1ePv9TixkYPBLzA4MZAYiPiNL1DHA8bpCkW64UIi227Bt0qVqHqlEFx
            EO+53RJOUpfz5n2Y0LNXvqkCw3ftIf78jTkRkst7sysPXQUtj3MihG7AmUkryl4T
            P9hKmzrFkModWS+7dHupe6amr8OHg+nxXT7p9kSN3JLf3m29XXYUUx7dokvKYEne
            NhIV+GOp1S/w8GbV7FBc8UphXS1oTqljAB7nUQp5E4ZPm00J1DkuN+ZKgNP9ISLs
            moPRgzsssAfp+a6Qt0D1LTUBX3REj3ALljflh+APnQKBgQDJOjSHvth0P2gv5OP3
            wI3js0vxLIo70oBtPwFvk5vQV078clrEXLLZCvTROpx+vWXrrSYRy+fsp29LmWEH
            zxOjnx5kWBJNkUouTObtWHKxGxs6eP3PqKFq4kENDTPOq9GEg1zyLKM2Yn472e2G
            0wGeQ2JvBVXobpB4HkTDvigyXQKBgQC7H1XgkXYFReI1Xg58VVsxS/gklI5VZC3U
            QdGizns/4uvTb7zpnVR1GxLdJOUjwjN/o47mrhnhS2D9E+lTsCiIV57nTm0fxfp1
            po/vpcMV7/xNlmmjGQkXzl1LJrb4B2wdr6zPN2FejHrePh3sYq9+LbRIfpRSp5RE
            O8Ij35/t2wKBgE4FFUz0f/RCiWDYfFMZA2qfn/g4brhXG5g/74yVTLpwv509sVel
            IWrpxpZBBWBWiuff0Hzh9GBbYtmK9IYUkebE0QHS6/XLOVnOU1L/Eij8+4emVbJo
            DX3lj5dB4S5mi+u3CxiSmg2CDrOiAWhe86erNMUa6n4eMEGCauMCHY+5AoGALxLw
            AMG3RhZRlQlnbYHvohQxhcpVkEfWe6pfOazmNqk4mIVoqgCpaZh5A2cvufI2EGsu
            HPw5iIL1EFW9Ag+z8rDQSfJh43djzcssNKan0FICT+aCBsTak8GXmLtRlk4Ptdwn
            Bi4xcZ63nkdUMc6VxZFr5DzrxWthElVSPsIYMrcCgYBifSatv+4s7/5uJoaEhRO6
            m28cosZTQJRedjrYIX6Lsa4a4dQNU9rt/5mBLp4sm2CuB8fpYoe0OBEQekjVONfR
            /q2FalSSSl/ByCkecA+RxalHOE4An1R39J4oT4gtDnEzNwUFcyovqMZxiaVrvnJ4
            R20mjcz4fpb2SqZo7FwQzQ==
            -----END PRIVATE KEY-----
        lab-ctrl2:
          certificate: |
            -----BEGIN CERTIFICATE-----
            MIIDNzCCAh+gAwIBAgIUA3B0vx/090lpqagclNb0enjHoUowDQYJKoZIhvcNAQEL
            BQAwJTEjMCEGA1UEAwwab3BlbnN0YWNrX2hhIGxhYiBHYWxlcmEgQ0EwHhcNMjYx
            MjAzMjMxNjEwWhcNMzYxMTMwMjMxNjEwWjAUMRIwEAYDVQQDDAlsYWItY3RybDIw
            ggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQC/iY2ose2Sgyj5EAVdolax
            OVzkY5uSMnOfzmYyG93T2CcXzgeXmNMirJG2ZZLZIdE7WDoILnM40WLYSYhrXpNq
            IH1RYkcdrtR2Y3pTQNnyVFRDJ5XscV/DoKAcH8F70J7FwWYEtrUVz/m8Dw5idj2R
            OGEv9p7q7UA2NfxCWcaKMtJ3B2R4E6ll0ziKhHxeDGbU89cnn/k6beOO36EOaJSP
            de08n4t6vUVYaxWk7NiuVKKadvrODTSKSDt4ob938kgzLKAB1Imas9DQZ4lUUeDu
            3BEW+pwcH3C0IWmcgLBWTAWUM+y2OuCqeDnghQ3MPZu7JV5zHKQzHwrWouSPHhLX
            AgMBAAGjcDBuMCwGA1UdEQQlMCOHBArVAAyHEP0AAhMAAAAAAAAAAAAAABKCCWxh
            Yi1jdHJsMjAdBgNVHQ4EFgQU3dPwTj5hvJCmrXjY+GoA/7jQlgwwHwYDVR0jBBgw
            FoAUeeuryzhiWMFUQjF+FrN2lg/E/AUwDQYJKoZIhvcNAQELBQADggEBADHyHPLm
            lk2CBdTkRkeIttDPXKg+xC4YonhFMplpgOrTcXqNgu0e4KC0yyURFPTuPPTVd9au
            OoyAdzZt0TslFpDngmBf+fuSaEbGuZ/2Rty8ZRuAJUdemgGTcUyQMuU3JEq4G0Nz
            UMBKN4Ko9tpgCi01sLWZ5bvfOKmuNaTeBlaosyqLLVFrxYX+4O+heAnz/vQw8vKU
            g/M4Iz984K0kiP5vL2cW4e07BJGuV3LqOrPmsOt/Bn86PxMw6m4rZcBQV5Yw7dHz
            5hEtOfUnaRdcTvulmW6Q5c0SxaSZMAoNRVO1o7TeEKBXgTriTr1D6hBbk5Jb6Hz4
            XBwQRyafyYF83Mw=
            -----END CERTIFICATE-----
          key: |
            -----BEGIN PRIVATE KEY-----
            MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQC/iY2ose2Sgyj5
            EAVdolaxOVzkY5uSMnOfzmYyG93T2CcXzgeXmNMirJG2ZZLZIdE7WDoILnM40WLY
            SYhrXpNqIH1RYkcdrtR2Y3pTQNnyVFRDJ5XscV/DoKAcH8F70J7FwWYEtrUVz/m8
            Dw5idj2ROGEv9p7q7UA2NfxCWcaKMtJ3B2R4E6ll0ziKhHxeDGbU89cnn/k6beOO
            36EOaJSPde08n4t6vUVYaxWk7NiuVKKadvrODTSKSDt4ob938kgzLKAB1Imas9DQ
            Z4lUUeDu3BEW+pwcH3C0IWmcgLBWTAWUM+y2OuCqeDnghQ3MPZu7JV5zHKQzHwrW
            ouSPHhLXAgMBAAECggEAR9TMXZGs6R9rREyv1nfFT12V6sk4VNG67xm21eABhysv
            LgxEaKQVupFBbEgXlHrMPxdNXDgfWhWcnkSldq7XVhutI9JZnVYts+CGxaYylmDt
            4Ol9nli+c11P7nwyUb7hbISlP+tNakq++7ohyOdTG50rRZOV8cDcLfh9DF0iyjyx
            q/jp6XwD/aQrqq69n5hRMs3BmBVG5luUkIwanEp3JPrbHkPbwTxZ9jNyNkJmsCn6
            PBYatqfGHwS4yPW5UDGvO69wCJBhDSTxeZ+Hpk7D+k71VT+1Fjctct33e1UTniIX
            Le5Hu8WqOugT8uWaMLO2ntXv5ZojJa/RV9cQtZDiIQKBgQD7MxCCVmxYiDuXgbkS
            Q0j6jaZJbDN6voHZTyc1iSgSK1SrocopKabPB+UDynH5eMkPaMG9tIJEgPSsE7fK
            Gt0qNOJjTLtZ/q2SSrNUcBDXQjrYxePj95k3yYz4SOiZCM/ewsaJuAAumR0SKhA+
            MHiwRnASF0O3ihQZlkSV55lnOQKBgQDDMpsEWouoLLA3s2Fw1GUMIPvOX9a++41v
            F/Ih5buhVPbnjw2xFzINNpLbJxJO3GD9r1G3tPZmZL9oVpORGg6E/dMf8FwvPU2Q
            t9B7kzbzyjjGHZUEnc2oUs5/L9dYyOUGd2C0JxDIRLPuP7h7TLbS48F/fALUdK7L
            F2i8+N66jwKBgFH8krDXoDktDbYfYtYxG8qbHODt7cdsEllo2jVA9NEpT1NNVPwm
            WglMXFTmaFiyMX1UBZfzKGlPZYwcS2otZm32IMWkL6np06DhvLIceYKoXSiPPhgT
            ofBxWg9XTINWOvJLxB0C7xxGYRSiofaKP3nZI47kBPgMmw7W2r/KfWkRAoGAakFy
            5wTO/yYMatXH1h6YPuj5iZbcFCxlCjNzyAYBhEn2+YgCwQLKaSzq9kcnjSwj1BSK
            nEDy3Dw9gXOXcqZHfxeYxMsXs1NglMWqxIoXoM/U5euWgePQ3q7s34lQZXE+Uq3L
            Q2X8mbfkZm3jY6MX5ma6n0YHWFWIDN/aUPv8ansCgYApp9F9vweJ6OnHnUOr0uVq
            s4VrlvJ5bxOPVo24bV6tndKc3JLjyHzEHYyIjop4ED0e2Qiy+RcTeOA7QfI2gmS1
            fbLN0zmkiVMFPiRODK5jor8Ak2FUXNRfvDX1un+5ns+8AF+6k1cm4mifk+N5B+NL
            fbjF9viUkuOidtq9f/qOZw==
            -----END PRIVATE KEY-----
        lab-ctrl3:
          certificate: |
            -----BEGIN CERTIFICATE-----
            MIIDNzCCAh+gAwIBAgIUA3B0vx/090lpqagclNb0enjHoUswDQYJKoZIhvcNAQEL
            BQAwJTEjMCEGA1UEAwwab3BlbnN0YWNrX2hhIGxhYiBHYWxlcmEgQ0EwHhcNMjYx
            MjAzMjMxNjEwWhcNMzYxMTMwMjMxNjEwWjAUMRIwEAYDVQQDDAlsYWItY3RybDMw
            ggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQCqnGVIeCZYNwSzcZX6zRxB
            udnbjBSvoYw42p/aXt7Zw7G2XVyCTNzWqXF7hxYmZ4C4aQYbQ/MSh249K9WuBT8y
            RKS1oE8Lf0+ff6VD6IXK4xmr6kVDHLL6BKpl30keAVX4VEcQRRJwfO5zUlmaYo+W
            DJ6Tr/ttAqmKfV4HfFu+JWBLtD/Z5+vYuZNnc0155JuNuHCYT8vpBZmDPj9Iu4Ym
            iSa/uBbntMacLFKUfDYr2Ea3oBuxVpNYv9sR+XpT4/lYv7Zw3J8UuOTAmduo5EfE
            Lv6l/463LKHaxtCaX2dTyrvu0tbFbUiudNxsWdfxecH8MYHV1W5D9T034Mq/ZZh3
            AgMBAAGjcDBuMCwGA1UdEQQlMCOHBArVAA2HEP0AAhMAAAAAAAAAAAAAABOCCWxh
            Yi1jdHJsMzAdBgNVHQ4EFgQUeKoP7DHfIhgAQmak3kaWuNoOYsEwHwYDVR0jBBgw
            FoAUeeuryzhiWMFUQjF+FrN2lg/E/AUwDQYJKoZIhvcNAQELBQADggEBAEXSk//H
            jsLbDZsSuzIX+ZNdq8w6GxcR1FB11rF11Bp5BLGdKnb5fTNmkdh98YBi+/I0HqIG
            SIX7Xg72kcycKwrrDqQOwP76ZXyq5AK1W2zTQ1Es+6GyAaUjIHZBuljc3agyDTAa
            wWiaC4yVwmjAwECn0lTxTgDft0dniKqrK/VTrSWrLdExGEGc/1DLvnvt0oibKkZd
            OcVuCreMNOJIgG67clIRn1Hza67zElErPWjBKWvSb/sfbQwGSvEaW6MFYufzMsrq
            RkcoeJYHaM62jlnBd04hREPWvkFfr8Iix7M9vN4ZJaJvBY13V3mySJgEWnr5V7/M
            S5lMBMwObZ2kGoc=
            -----END CERTIFICATE-----
          key: |
            -----BEGIN PRIVATE KEY-----
            MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCqnGVIeCZYNwSz
            cZX6zRxBudnbjBSvoYw42p/aXt7Zw7G2XVyCTNzWqXF7hxYmZ4C4aQYbQ/MSh249
            K9WuBT8yRKS1oE8Lf0+ff6VD6IXK4xmr6kVDHLL6BKpl30keAVX4VEcQRRJwfO5z
            UlmaYo+WDJ6Tr/ttAqmKfV4HfFu+JWBLtD/Z5+vYuZNnc0155JuNuHCYT8vpBZmD
            Pj9Iu4YmiSa/uBbntMacLFKUfDYr2Ea3oBuxVpNYv9sR+XpT4/lYv7Zw3J8UuOTA
            mduo5EfELv6l/463LKHaxtCaX2dTyrvu0tbFbUiudNxsWdfxecH8MYHV1W5D9T03
            4Mq/ZZh3AgMBAAECggEAByqGKuuhB/T8AqezcV7WVKOu4Lkmol+3c1eHIMz5300r
            JhubnDerXYR/Bk8RKgSEv/RdtsAxt7TLd38GZYx0UxYE1/wnbRN5soRGZkAr2KkK
            CkaJKYB70pGssMToL34XmT0w/AjfDK1s31JvoQ0s8Jn4jEWxfXwix0ZhJLO2r4I3
            +3G+7Y2MiDWRt2fNCEajmKuPdB+IzV0AA1R2DvmSahk0IsWetf85GAC4KBeYYhXw
            Mx0H35DRgqODWDp5xyfNeFMkZkVjaKObjhgElWSL36VqkSUnmKjn10MY1BR+vcYe
            9fCMfUJPYyISZPSQX4pKNLwCLNYpPNDpIa4w3s3JwQKBgQDrfTUxsR1ic9yvq7R0
            KjSsBFUK9CNGROoIdezUhx+dVXb4eZ3eGITgA8YoTe4fzjnoDtzHHVRueZ16NzTw
            ufYhYys4fu3LcPBs82Nlm7a9RRaGVwsLPqYxGQjxZ8Sm+PnPe+0oez5sjzJp0NTx
            MytJclGW+37H5fQcF5PHSh46ywKBgQC5eJLsIuV272M8wJwCfnzZWU9u3oCKZLwb
            RKIuCc90JHeYXLt2Sq24M6gYRtlA9Hdm8r5AIW/zlQMdjCzY/SN0QLvSfj7Rhgwe
            f/qgF0knW99zTUpGIDbayyPs3nHFwenqCsjHC5jAJ+qdyB6/8d4Z8JN0nYDDTw9j
            cD3C4BCHhQKBgHLPiK/BemIVuvKq9D/uk9+J/Sxp+wi3cKLPW7gCaRd8I5ThNmah
            7aaKMIJV/FLlaLYLCPjLA+8Yu/5qDBWRlL6SavAQcj9NwOpdf4h6co20sVat+WRy
            FvS5D/MidG4z1Rejg+zIqZaj+iA9AJTYLbKRWdYSp60uH+XSWOpA6JwhAoGAaKpa
            f1fSFqRRZF9tqxqmaiG0aeS2tWLTpK++tixjHi/WLe1m/QJ3tpOwMMMKp1VObJJg
            OuCjxNo6v9nzFSEFeP1vAQKtgKAdBrlCPkXlyohWOUNMvvY+/onU5D9EBU3BK4qa
            c3lf4lCkXhYpBDkCFbFmBVE88PsUvBEDSY4YxeECgYAptCgP48iEFslkFzJX60eA
            g4pJvawxDnrgurcRwnVhpY7lf0ryeYMOKWQWo6Y+yQsUGVz9f6sTWMgo1oTRDoDI
            sTITRAHRlQ5tHoh2f3QqDwmHuC+DfGzlfhlfoeLWdK7mk8M93vwjzO14MT7EBedL
            AArH+sqZCPeyeLs1SSPWLQ==
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
  remediation:
    # Three controllers share two cores here: under the tests' load a probe of a healthy
    # stand-in sometimes waited past the default 0.25 s on two controllers at once, and the loop
    # drained a healthy backend. A site's controllers are separate hosts; the lab is not.
    # For the same reason they probe every 2 s (21 probes a controller a round): on a slow
    # 2-core host the beacons' probes were the largest part of the idle lab's CPU.
    # And no backend watcher (the default probes every 0.3 s): in the last whole-suite run with
    # it, healthy stand-ins starved of CPU by a state run on the same two cores missed the
    # 0.75 s timeout on two controllers at once and were drained. The tests that measure the
    # watcher switch it on (test_remediation.py, bench/drain_latency.py --watch).
    probe: {timeout: 0.75, interval: 2, watch: 0}
  haproxy:
    stats: {enabled: true, port: 8404, user: admin, password: lab-stats-secret}
    # The stand-in APIs answer in milliseconds: a request still unanswered after 10 s is hung,
    # so a POST stuck on a stopped backend fails (504) in 10 s instead of 120 s.
    timeouts: {server: 10}
